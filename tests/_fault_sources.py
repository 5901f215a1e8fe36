"""Sources for the fault-injection tests (every executor, Ray included). Kept free of TensorFlow so that worker
processes and Ray workers, which import the module to unpickle a source, start in a fraction of a second."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

_KILLED_WAIT_S = 10.0
BIG_LENGTH = 40_000  # int64: 320 KB, above the chunking limit and the shared-memory inline limit


def element(i: int, big: bool) -> np.ndarray:
    return np.full((BIG_LENGTH,) if big else (4,), i, np.int64)


class FailsOnceAt:
    """``n`` elements; element ``bad`` raises until ``fixed`` (a file) exists."""

    def __init__(self, n: int, bad: int, fixed: Path, big: bool = False) -> None:
        self.n, self.bad, self.fixed, self.big = n, bad, str(fixed), big

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.bad and not os.path.exists(self.fixed):
            raise ValueError(f"corrupt record {i}")
        return element(i, self.big)


class CountsEpochs(FailsOnceAt):
    """A FailsOnceAt whose state changes at every epoch end (so the process executor sends it to its workers
    again at the start of each pass)."""

    def __init__(self, n: int, bad: int, fixed: Path, big: bool = False) -> None:
        super().__init__(n, bad, fixed, big)
        self.epochs = 0

    def on_epoch_end(self) -> None:
        self.epochs += 1


class KillsItselfAt:
    """``n`` elements; the process producing element ``at`` kills itself with SIGKILL."""

    def __init__(self, n: int, at: int) -> None:
        self.n, self.at = n, at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return element(i, False)


class BlocksOnceAt:
    """Element ``at`` (until ``fixed`` exists) writes its process id into the FIFO ``tell`` and blocks for good.
    The element before it is still being made when that worker dies: it waits until ``killed`` exists (for at
    most ``_KILLED_WAIT_S``, in case one worker holds both)."""

    def __init__(self, n: int, at: int, tell: Path, fixed: Path, killed: Path, big: bool = False) -> None:
        self.n, self.at, self.tell, self.fixed, self.killed = n, at, str(tell), str(fixed), str(killed)
        self.big = big

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at - 1 and not os.path.exists(self.fixed):
            deadline = time.monotonic() + _KILLED_WAIT_S
            while not os.path.exists(self.killed) and time.monotonic() < deadline:
                time.sleep(0.01)  # polls a file another process writes
        if i == self.at and not os.path.exists(self.fixed):
            with open(self.tell, "w") as fifo:
                fifo.write(str(os.getpid()))
            threading.Event().wait()  # until killed
        return element(i, self.big)


class HangsOnceAt:
    """Element ``at`` hangs until ``fixed`` exists: on ``release`` in this process (so the test can end the hung
    call and see its thread go), or for good inside a worker process (which the executor kills)."""

    def __init__(self, n: int, at: int, fixed: Path, release: threading.Event | None) -> None:
        self.n, self.at, self.fixed, self.release = n, at, str(fixed), release

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at and not os.path.exists(self.fixed):
            (self.release or threading.Event()).wait()
        return element(i, False)


class Slowish:
    """Elements that take a few milliseconds, so a pass is still running when the consumer stops early."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ends = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        time.sleep(0.004)
        return element(i, False)

    def on_epoch_end(self) -> None:
        self.ends += 1


class LyingLength:
    """``__getitem__`` serves ``real`` elements (IndexError after); ``__len__`` says ``says``."""

    def __init__(self, real: int, says: int) -> None:
        self.real, self.says = real, says

    def __len__(self) -> int:
        return self.says

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.real:
            raise IndexError(f"index {i} out of range")
        return element(i, False)


class Shrinking(LyingLength):
    """Loses three elements at every epoch end: its length changes under a dataset whose size is fixed."""

    def __init__(self) -> None:
        super().__init__(10, 10)

    def on_epoch_end(self) -> None:
        self.real = self.says = self.real - 3


class Batches:
    """10 batches; batch i holds features and labels equal to i; counts epoch hooks."""

    def __init__(self) -> None:
        self.begins = self.ends = 0

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> Any:
        return np.full((2, 3), i, np.float32), np.full((2, 1), i, np.float32)

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1


class _AwayFromHome:
    """Misbehaves at element ``at`` only away from the process that made it (the peek runs there; Ray's workers
    are elsewhere). Elements are float32 (2,) arrays holding their index."""

    def __init__(self, n: int, at: int) -> None:
        self.n, self.at = n, at
        self.home = os.getpid()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at and os.getpid() != self.home:
            self.misbehave(i)
        return np.full((2,), i, np.float32)

    def misbehave(self, i: int) -> None:
        raise NotImplementedError


class RaisesAway(_AwayFromHome):
    def misbehave(self, i: int) -> None:
        raise ValueError(f"corrupt record {i}")


class DiesAway(_AwayFromHome):
    def misbehave(self, i: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class HangsAway(_AwayFromHome):
    def misbehave(self, i: int) -> None:
        threading.Event().wait()  # for good: the executor has to cancel or kill it

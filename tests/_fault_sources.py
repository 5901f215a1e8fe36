"""Sources for the fault-injection tests. Kept free of TensorFlow so that worker processes, which import the
module to unpickle a source, start in a fraction of a second."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

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


class BlocksOnceAt:
    """Element ``at`` (until ``fixed`` exists) writes its process id into the FIFO ``tell`` and blocks for good;
    the element before it takes a while."""

    def __init__(self, n: int, at: int, tell: Path, fixed: Path, big: bool = False) -> None:
        self.n, self.at, self.tell, self.fixed, self.big = n, at, str(tell), str(fixed), big

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at - 1 and not os.path.exists(self.fixed):
            time.sleep(1.0)  # slow work: still running on another worker when the one at ``at`` dies
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

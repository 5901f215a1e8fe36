"""Sources for the fault-injection tests (every executor, Ray included). Kept free of TensorFlow so that worker
processes and Ray workers, which import the module to unpickle a source, start in a fraction of a second."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
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


def _own_connection() -> int:
    """The descriptor of this worker process's connection with the main process: its one socket."""
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.append(int(fd))
    if len(sockets) != 1:
        raise RuntimeError(f"expected one socket in the worker process, found {len(sockets)}")
    return sockets[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FreezesMidReply:
    """``n`` small elements. For element ``at`` (until ``fixed`` exists) the worker writes on its connection the
    first ``sent`` bytes (None: half) of a reply holding a big nested Python structure (``rows`` lists of three
    ints, no array: it travels in the reply itself, about ``rows`` x 10 bytes), length first, as the worker sends
    a reply; then writes ``"pid time"`` into the file ``tell`` and stops its own process with SIGSTOP: a worker
    frozen half-way through sending a result."""

    def __init__(self, n: int, at: int, rows: int, tell: Path, fixed: Path, sent: int | None = None) -> None:
        self.n, self.at, self.rows, self.tell, self.fixed, self.sent = n, at, rows, str(tell), str(fixed), sent

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i != self.at or os.path.exists(self.fixed):
            return element(i, False)
        value = {"rows": [[i, k, k * k] for k in range(self.rows)]}
        reply = pickle.dumps(("ok", i, pickle.dumps(value, protocol=5)), protocol=5)
        wire = struct.pack("!i", len(reply)) + reply
        _write_all(_own_connection(), wire[: len(wire) // 2 if self.sent is None else self.sent])
        with open(self.tell + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {time.time()}")
        os.rename(self.tell + ".tmp", self.tell)
        os.kill(os.getpid(), signal.SIGSTOP)
        return element(i, False)


class WritesOnItsConnection:
    """``n`` small elements; element ``at`` (until ``fixed`` exists) first writes ``data`` on its worker's
    connection with the main process, then returns as usual: bytes on the wire that are not (only) its reply."""

    def __init__(self, n: int, at: int, data: bytes, fixed: Path) -> None:
        self.n, self.at, self.data, self.fixed = n, at, data, str(fixed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at and not os.path.exists(self.fixed):
            _write_all(_own_connection(), self.data)
        return element(i, False)


def _refuses_main(home: int) -> Any:
    if os.getpid() == home:
        raise ModuleNotFoundError("No module named 'only_in_workers'")
    return "made in a worker"


class _OnlyInWorkers:
    """Unpickles in worker processes only, as an object of a module the main process cannot import would."""

    def __init__(self, home: int) -> None:
        self.home = home

    def __reduce__(self) -> Any:
        return _refuses_main, (self.home,)


class UnreadableAt:
    """``n`` small elements; element ``at`` holds an object the main process cannot unpickle."""

    def __init__(self, n: int, at: int) -> None:
        self.n, self.at, self.home = n, at, os.getpid()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i == self.at:
            return {"x": element(i, False), "extra": _OnlyInWorkers(self.home)}
        return {"x": element(i, False), "extra": None}


class Carrying:
    """``n`` small elements from a source that carries ``mb`` MB of its own (sent to every worker at each pass
    whose source differs from the last one's); ``tag`` tells two such sources apart."""

    def __init__(self, n: int, tag: int, mb: int = 4) -> None:
        self.n, self.blob = n, bytes([tag]) * (mb << 20)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return element(i, False)

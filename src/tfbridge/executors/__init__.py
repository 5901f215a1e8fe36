"""Executors run a source's element production: serial, threads, processes, Ray tasks.

:func:`choose` decides ``executor="auto"`` from what the peek measured, and says why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tfbridge.errors import TfBridgeError, check_int, short
from tfbridge.executors._base import Executor, Task
from tfbridge.executors.processes import ProcessExecutor
from tfbridge.executors.serial import SerialExecutor
from tfbridge.executors.threads import ThreadExecutor

ExecutorName = Literal["serial", "thread", "process", "ray", "auto"]
_NAMES = ("serial", "thread", "process", "ray", "auto")
_CHEAP_ELEMENT_S = 0.0005  # below this per element, handing work to threads costs more than it saves
_WAITING_SHARE = 0.5  # CPU time under this share of wall time: the source mostly waits
_LATENCY_WORKERS = 16  # threads for an explicit executor="thread" without workers=
_MAX_LATENCY_WORKERS = 64
_PER_ELEMENT_OVERHEAD_S = 0.00015  # Python time one element costs the feeding side: bounds useful concurrency
_COPY_BYTES_PER_S = 2e9  # a conservative memcpy rate: a worker copies each element once into shared memory


@dataclass(frozen=True)
class Choice:
    name: str
    workers: int
    reason: str


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose(
    kind: str,
    wall_s: float,
    cpu_s: float,
    count: int,
    nbytes: int = 0,
    pickles: Callable[[], str | None] = lambda: None,
) -> Choice:
    """The executor ``auto`` picks, from what the peek measured for ``count`` elements.

    ``pickles()`` returns None when the source can be sent to worker processes, else the reason it cannot.
    """
    if kind == "native":
        return Choice("native", 0, "a tf.data dataset runs in TensorFlow's own threads; no Python per element")
    if kind == "arrays":
        return Choice("native", 0, "in-memory arrays are gathered by tf.data itself; no Python per element")
    if kind == "stream":
        return Choice("serial", 1, "a stream (generator/iterable) can only be read in order by one reader")
    per = wall_s / max(count, 1)
    if per < _CHEAP_ELEMENT_S:
        return Choice("serial", 1, f"elements are cheap ({per * 1e3:.2f} ms each); workers would cost more than they save")
    share = cpu_s / wall_s if wall_s > 0 else 1.0
    if share < _WAITING_SHARE:
        n = min(_MAX_LATENCY_WORKERS, max(8, round(per / _PER_ELEMENT_OVERHEAD_S)))
        return Choice(
            "thread",
            n,
            f"elements take {per * 1e3:.1f} ms each but only {share:.0%} of that is CPU time: "
            f"the source waits, so {n} threads keep many elements in flight",
        )
    n = cores()
    cpu_per = cpu_s / max(count, 1)
    copy_s = nbytes / max(count, 1) / _COPY_BYTES_PER_S
    if n < 2:
        return Choice("serial", 1, "one core: parallel workers cannot help CPU-bound elements")
    if cpu_per < copy_s:
        return Choice(
            "thread",
            n,
            f"elements are big ({nbytes / max(count, 1) / 1e6:.1f} MB) for the CPU time they take "
            f"({cpu_per * 1e3:.1f} ms): making them is mostly copying memory, which threads share without "
            "the GIL, while processes would copy each element once more",
        )
    why_not = pickles()
    if why_not is not None:
        return Choice("thread", n, f"elements are CPU-bound ({cpu_per * 1e3:.1f} ms each) but {why_not}")
    return Choice(
        "process",
        n,
        f"elements are CPU-bound ({cpu_per * 1e3:.1f} ms of CPU each, {share:.0%} of wall time): "
        f"one worker process per core ({n}) escapes the GIL",
    )


def make(
    name: str,
    workers: int | None,
    seed: int | None = None,
    timeout: float | None = None,
    address: str | None = None,
) -> Executor:
    if name not in _NAMES:
        msg = f"executor must be one of {', '.join(map(repr, _NAMES))}. Received: {short(name)}"
        raise TfBridgeError(msg)
    check_int("workers", workers, optional=True)
    if name == "serial":
        return SerialExecutor(timeout)
    if name == "thread":
        return ThreadExecutor(workers or _LATENCY_WORKERS, timeout=timeout)
    if name == "process":
        return ProcessExecutor(workers or cores(), seed=seed, timeout=timeout)
    from tfbridge.executors.ray import RayExecutor, _ray

    _ray()  # says now, with the install hint, when Ray is missing
    return RayExecutor(workers, address=address, timeout=timeout)


__all__ = [
    "Choice",
    "Executor",
    "ExecutorName",
    "ProcessExecutor",
    "SerialExecutor",
    "Task",
    "ThreadExecutor",
    "choose",
    "cores",
    "make",
]

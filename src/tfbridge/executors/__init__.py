"""Executors run a Python source's element production: serial, threads, processes, Ray tasks.

:class:`ExecutorOptions` says who runs them; :func:`choose` decides ``"auto"`` from what the peek measured
(and says why); :func:`make` builds the one executor a dataset uses. "auto" never chooses Ray.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from tfbridge.errors import TfBridgeError
from tfbridge.executors._base import Executor, Task
from tfbridge.executors._options import EXECUTOR_NAMES, ExecutorName, ExecutorOptions, resolve
from tfbridge.executors.processes import ProcessExecutor, dumps_task
from tfbridge.executors.serial import SerialExecutor
from tfbridge.executors.threads import ThreadExecutor

_CHEAP_ELEMENT_S = 0.0005  # below this per element, handing work to threads costs more than it saves
_WAITING_SHARE = 0.5  # CPU time under this share of wall time: the source mostly waits
_LATENCY_WORKERS = 16  # threads for an explicit executor="thread" without workers=
_MAX_LATENCY_WORKERS = 64
_PER_ELEMENT_OVERHEAD_S = 0.00015  # Python time one element costs the feeding side: bounds useful concurrency
_COPY_BYTES_PER_S = 2e9  # a conservative memcpy rate: a worker copies each element once into shared memory


@dataclass(frozen=True)
class Choice:
    """The executor a dataset runs on (``native``: none, tf.data runs it), its worker count and why."""

    name: str
    workers: int
    reason: str


@dataclass(frozen=True)
class Cost:
    """What producing ``count`` peeked elements cost, and whether the source can only be read in order."""

    wall_s: float
    cpu_s: float
    count: int
    nbytes: int = 0
    sequential: bool = False


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pickle_problem(task: Task | None) -> str | None:
    """None when ``task`` can be sent to worker processes, else why not (first line of the error)."""
    if task is None:
        return "the source has no index"
    try:
        dumps_task(task)
    except TfBridgeError as exc:
        return "the source does not pickle (" + str(exc).splitlines()[0].split(": ", 1)[-1] + ")"
    return None


def choose(cost: Cost, pickles: Callable[[], str | None] = lambda: None) -> Choice:
    """The executor ``auto`` picks from what the peek measured.

    ``pickles()`` returns None when the source can be sent to worker processes, else the reason it cannot.
    """
    if cost.sequential:
        return Choice("serial", 1, "a stream (generator/iterable) can only be read in order by one reader")
    per = cost.wall_s / max(cost.count, 1)
    if per < _CHEAP_ELEMENT_S:
        reason = f"elements are cheap ({per * 1e3:.2f} ms each); workers would cost more than they save"
        return Choice("serial", 1, reason)
    share = cost.cpu_s / cost.wall_s if cost.wall_s > 0 else 1.0
    if share < _WAITING_SHARE:
        n = min(_MAX_LATENCY_WORKERS, max(8, round(per / _PER_ELEMENT_OVERHEAD_S)))
        return Choice(
            "thread",
            n,
            f"elements take {per * 1e3:.1f} ms each but only {share:.0%} of that is CPU time: "
            f"the source waits, so {n} threads keep many elements in flight",
        )
    n = cores()
    cpu_per = cost.cpu_s / max(cost.count, 1)
    copy_s = cost.nbytes / max(cost.count, 1) / _COPY_BYTES_PER_S
    if n < 2:
        return Choice("serial", 1, "one core: parallel workers cannot help CPU-bound elements")
    if cpu_per < copy_s:
        return Choice(
            "thread",
            n,
            f"elements are big ({cost.nbytes / max(cost.count, 1) / 1e6:.1f} MB) for the CPU time they take "
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


def make(choice: Choice, options: ExecutorOptions, seed: int | None = None) -> Executor:
    """The executor for ``choice`` (never "auto" or "native"), with the options' timeout, Ray address and worker
    recycling."""
    workers = choice.workers or options.workers
    if choice.name == "serial":
        return SerialExecutor(options.timeout)
    if choice.name == "thread":
        return ThreadExecutor(workers or _LATENCY_WORKERS, timeout=options.timeout)
    if choice.name == "process":
        return ProcessExecutor(
            workers or cores(),
            seed=seed,
            timeout=options.timeout,
            max_elements_per_worker=options.max_elements_per_worker,
            max_worker_rss=options.max_worker_rss,
        )
    if choice.name == "ray":
        from tfbridge.executors.ray import RayExecutor, _ray

        _ray()  # says now, with the install hint, when Ray is missing
        ray_executor = RayExecutor(workers or None, address=options.ray_address, timeout=options.timeout)
        ray_executor.connect()  # here, in the thread that builds the dataset, never in a tf.data thread
        return ray_executor
    msg = f"no executor is made for {choice.name!r} (tfbridge chooses one for 'auto'; 'native' runs no Python)"
    raise TfBridgeError(msg)


__all__ = [
    "EXECUTOR_NAMES",
    "Choice",
    "Cost",
    "Executor",
    "ExecutorName",
    "ExecutorOptions",
    "ProcessExecutor",
    "SerialExecutor",
    "Task",
    "ThreadExecutor",
    "choose",
    "cores",
    "make",
    "pickle_problem",
    "resolve",
]

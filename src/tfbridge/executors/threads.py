"""A thread pool with a bounded window of elements in flight, results in order.

Threads suit sources that wait (file or network reads, sleeps, decoders that release the GIL). A fresh set of
daemon threads serves each pass and is told to stop when the pass ends or its consumer stops early: no thread
outlives the iteration that started it, except one stuck inside the source's own code, which cannot be
stopped from outside and, being a daemon, never keeps the interpreter from exiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from tfbridge.executors._base import IN_FLIGHT_PER_WORKER, STALL, Task, timeout_error


class ThreadExecutor:
    name = "thread"

    def __init__(self, workers: int, in_flight: int | None = None, timeout: float | None = None) -> None:
        self.workers = workers
        self.in_flight = in_flight or workers * IN_FLIGHT_PER_WORKER
        self.timeout = timeout

    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        jobs: deque[tuple[int, int]] = deque()  # (position, index) not yet taken by a thread
        done: dict[int, tuple[bool, Any]] = {}  # position -> (ok, result or exception)
        started: dict[int, float] = {}  # position -> when a thread began it
        cond = threading.Condition()
        stopping = False

        def work() -> None:
            while True:
                with cond:
                    while not jobs and not stopping:
                        cond.wait()
                    if stopping:
                        return
                    position, index = jobs.popleft()
                    started[position] = time.monotonic()
                try:
                    outcome = (True, task(index))
                except BaseException as exc:  # delivered at its position in the order
                    outcome = (False, exc)
                with cond:
                    done[position] = outcome
                    cond.notify_all()

        order = indices  # a sequence (e.g. an epoch's permutation): read by position, never copied
        threads = [
            threading.Thread(target=work, daemon=True, name=f"tfbridge-{n}")
            for n in range(min(self.workers, max(len(order), 1)))
        ]
        for t in threads:
            t.start()
        submitted = 0
        try:
            for position, index in enumerate(order):
                stalled = stall_s is None  # else STALL every stall_s while this element is waited for
                while True:
                    with cond:
                        while submitted < len(order) and submitted < position + self.in_flight:
                            jobs.append((submitted, order[submitted]))
                            submitted += 1
                        cond.notify_all()
                        waiting_since = time.monotonic()
                        while position not in done:
                            wait = self._wait_s(started.get(position))
                            if not stalled:
                                assert stall_s is not None
                                left = stall_s - (time.monotonic() - waiting_since)
                                if left <= 0:
                                    break
                                wait = left if wait is None else min(wait, left)
                            cond.wait(wait)
                            if position not in done:
                                self._check_deadline(started.get(position), index)
                        if position in done:
                            ok, value = done.pop(position)
                            started.pop(position, None)
                            break
                    yield STALL  # the consumer may deliver what it holds (or step out) while this element is made
                if not ok:
                    raise value
                yield value
        finally:
            with cond:
                stopping = True
                jobs.clear()
                cond.notify_all()

    def _wait_s(self, since: float | None) -> float | None:
        if self.timeout is None:
            return None
        if since is None:  # not begun yet: it waits for a thread, which the deadline does not count
            return self.timeout
        return max(0.0, since + self.timeout - time.monotonic())

    def _check_deadline(self, since: float | None, index: int) -> None:
        if self.timeout is not None and since is not None and time.monotonic() - since >= self.timeout:
            raise timeout_error(index, self.timeout, "a worker thread was still inside the source's call for it")

    def close(self) -> None:
        pass

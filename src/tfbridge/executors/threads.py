"""A thread pool with a bounded window of elements in flight, results in order.

Threads suit sources that wait (file or network reads, sleeps, decoders that release the GIL). A fresh pool
serves each pass and is shut down when the pass ends or its consumer stops early, so no thread outlives the
iteration that started it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tfbridge.executors._base import Task

_IN_FLIGHT_PER_WORKER = 2


class ThreadExecutor:
    name = "thread"

    def __init__(self, workers: int, in_flight: int | None = None) -> None:
        self.workers = workers
        self.in_flight = in_flight or workers * _IN_FLIGHT_PER_WORKER

    def imap(self, task: Task, indices: Sequence[int]) -> Iterator[Any]:
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tfbridge")
        pending: deque[Future[Any]] = deque()
        todo = iter(indices)
        try:
            for i in todo:
                pending.append(pool.submit(task, i))
                if len(pending) >= self.in_flight:
                    break
            while pending:
                result = pending.popleft().result()
                for i in todo:
                    pending.append(pool.submit(task, i))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pass

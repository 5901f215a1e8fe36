"""Everything in the calling thread: no overhead, no parallelism.

With a ``timeout`` each element is produced in a helper thread and waited for at most that long, so a hung
source becomes an error naming the element instead of a silent stall.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from tfbridge.executors._base import Task, call_within


class SerialExecutor:
    name = "serial"
    workers = 1

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout

    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        # elements are made in the consumer's thread: it cannot deliver anything while one is made (no STALL)
        timeout = self.timeout
        for i in indices:
            if timeout is None:
                yield task(i)
            else:
                yield call_within(partial(task, i), timeout, i, "the source's call for it had not returned")

    def close(self) -> None:
        pass

"""Everything in the calling thread: no overhead, no parallelism."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tfbridge.executors._base import Task


class SerialExecutor:
    name = "serial"
    workers = 1

    def imap(self, task: Task, indices: Sequence[int]) -> Iterator[Any]:
        for i in indices:
            yield task(i)

    def close(self) -> None:
        pass

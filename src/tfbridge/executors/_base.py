"""The executor interface: an ordered map of a picklable task over element indices.

``imap(task, indices)`` yields ``task(i)`` for each index in order, with a bounded number in flight, and
stops all outstanding work when the consumer closes the iterator early. Exceptions the task raises (tfbridge
errors such as SourceError or SpecMismatchError) reach the consumer unchanged, at the position of the element
that raised. The task is a picklable callable so that executors running in other processes or on other
machines fit the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from tfbridge._timeout import call_within, timeout_error

Task = Callable[[int], Any]
IN_FLIGHT_PER_WORKER = 2  # elements each worker holds: one being made, one waiting


class _Stall:
    """Yielded by ``imap(..., stall_s=t)`` in place of a result when the next element has not been ready for
    ``t`` seconds (once per element): a consumer holding finished elements back (chunks) delivers them."""

    def __repr__(self) -> str:
        return "STALL"


STALL = _Stall()


@runtime_checkable
class Executor(Protocol):
    name: str
    workers: int

    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        """``task(i)`` for ``i`` in ``indices``, in that order; with ``stall_s``, also ``STALL`` each time the next
        element has kept the consumer waiting that long again (executors that make elements in the consumer's own
        thread never do). ``seeds``: the pass's (seed, epoch), from which worker processes seed each element's
        random draws with its index (by default the executor's seed and its own count of passes)."""
        ...

    def close(self) -> None:
        """Release workers; the executor may not be used afterwards."""
        ...


__all__ = ["IN_FLIGHT_PER_WORKER", "STALL", "Executor", "Task", "call_within", "timeout_error"]

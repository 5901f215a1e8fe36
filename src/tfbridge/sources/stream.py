"""Sequential sources: generator functions, re-iterables, and one-shot iterators.

A one-shot iterator cannot be rewound, so what tfbridge peeks from it is kept with the iterator (in a weak
registry) and replayed first by any later tfbridge call on the same object: ``keras_inputs(gen)`` followed by
``to_dataset(gen)`` loses and repeats nothing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tfbridge.sources._base import Stream


class GeneratorFunction(Stream):
    """A zero-argument callable returning an iterator; called anew for each pass."""

    def __init__(self, fn: Callable[[], Iterable[Any]], batched: bool) -> None:
        self.obj = fn
        self.batched = batched

    @property
    def name(self) -> str:
        return getattr(self.obj, "__qualname__", None) or super().name

    def iterate(self) -> Iterator[Any]:
        return iter(self.obj())


class ReIterable(Stream):
    """Any iterable whose ``iter()`` gives a fresh iterator each time."""

    def __init__(self, obj: Iterable[Any], batched: bool) -> None:
        self.obj = obj
        self.batched = batched

    def iterate(self) -> Iterator[Any]:
        return iter(self.obj)


class _Replay:
    """An iterator with a buffer of elements read ahead but not yet delivered, shared by all tfbridge calls."""

    _COMPACT_AT = 1024

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._buffer: list[Any] = []
        self._head = 0  # buffer[head:] are read ahead and not yet delivered
        self._lock = threading.Lock()

    def _fill(self, n: int) -> int:
        while len(self._buffer) - self._head < n:
            try:
                self._buffer.append(next(self._it))
            except StopIteration:
                break
        return len(self._buffer) - self._head

    def peek(self, n: int) -> list[Any]:
        """The next ``n`` elements (fewer at the end), left in place for whoever reads next."""
        with self._lock:
            self._fill(n)
            return self._buffer[self._head : self._head + n]

    def scan(self) -> Iterator[Any]:
        """Every remaining element, read ahead into the buffer so that nothing is consumed."""
        position = 0
        while True:
            with self._lock:
                if self._fill(position + 1) <= position:
                    return
                item = self._buffer[self._head + position]
            yield item
            position += 1

    def __iter__(self) -> _Replay:
        return self

    def __next__(self) -> Any:
        with self._lock:
            if self._head < len(self._buffer):
                item = self._buffer[self._head]
                self._buffer[self._head] = None
                self._head += 1
                if self._head >= self._COMPACT_AT and self._head * 2 >= len(self._buffer):
                    del self._buffer[: self._head]
                    self._head = 0
                return item
        return next(self._it)


_REPLAYS: weakref.WeakKeyDictionary[Any, _Replay] = weakref.WeakKeyDictionary()
_REPLAYS_STRONG: dict[int, tuple[Any, _Replay]] = {}  # iterators that cannot be weakly referenced
_REGISTRY_LOCK = threading.Lock()


def replay_of(it: Iterator[Any]) -> _Replay:
    with _REGISTRY_LOCK:
        try:
            replay = _REPLAYS.get(it)
            if replay is None:
                replay = _REPLAYS[it] = _Replay(it)
            return replay
        except TypeError:
            entry = _REPLAYS_STRONG.get(id(it))
            if entry is None or entry[0] is not it:
                entry = _REPLAYS_STRONG[id(it)] = (it, _Replay(it))
            return entry[1]


class OneShot(Stream):
    """An iterator or generator object: one pass only, peeked elements replayed."""

    one_shot = True

    def __init__(self, it: Iterator[Any], batched: bool) -> None:
        self.obj = it
        self.batched = batched
        self.replay = replay_of(it)

    def iterate(self) -> Iterator[Any]:
        return self.replay

    def scan(self) -> Iterator[Any]:
        return self.replay.scan()

    def peek(self, n: int) -> Any:
        from tfbridge.sources._base import call_user

        def produce(i: int) -> Any:
            items = call_user(self.replay.peek, i, i + 1)
            if len(items) <= i:
                raise StopIteration
            return items[i]

        return self._timed(produce, list(range(n)))

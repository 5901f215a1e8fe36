"""Sequential sources: generator functions, re-iterables, and one-shot iterators.

A one-shot iterator cannot be rewound, so what tfbridge peeks from it is kept for the iterator and replayed
first by any later tfbridge call on the same object: ``keras_inputs(gen)`` followed by ``to_dataset(gen)``
loses and repeats nothing. The replay keeps nothing that nobody can use: its buffer lives only until it is
replayed or the iterator is gone.
"""

from __future__ import annotations

import functools
import gc
import inspect
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tfbridge.sources import _python
from tfbridge.sources._base import (
    _DECIDE_PEEK,
    BuildPlan,
    Built,
    Peek,
    Problems,
    Runner,
    Task,
    arrays_of,
    call_user,
    changed,
    check_elements,
    decide_batched,
    detached,
    infer_from_peek,
    timed,
)
from tfbridge.sources.labels import split_label

if TYPE_CHECKING:
    from tfbridge.spec import Inference, Spec


class _Replay:
    """An iterator with a buffer of elements read ahead but not yet delivered, shared by all tfbridge calls.

    It holds the iterator weakly when it can (the sources that read it hold it strongly), so that a buffer
    nobody can reach any more goes with its iterator."""

    _COMPACT_AT = 1024

    def __init__(self, it: Iterator[Any]) -> None:
        self._strong: Iterator[Any] | None = None
        self._weak: weakref.ref[Iterator[Any]] | None = None
        me = weakref.ref(self)
        try:
            self._weak = weakref.ref(it, lambda _: _forget(me()))
        except TypeError:  # e.g. list and tuple iterators: held strongly, pruned by reference count
            self._strong = it
        self._buffer: list[Any] = []
        self._head = 0  # buffer[head:] are read ahead and not yet delivered
        # whether the iterator fills one buffer again for each element (then elements are buffered as copies);
        # until the next element is read, a copy of the last one buffered tells whether reading it changed it
        self.reused_memory = False
        self._check: tuple[int, Any, Any] | None = None  # (its place in the buffer, the element, its copy)
        self._lock = threading.Lock()

    def iterator(self) -> Iterator[Any] | None:
        return self._strong if self._weak is None else self._weak()

    def _fill(self, n: int) -> int:
        it = self.iterator()
        while it is not None and len(self._buffer) - self._head < n:
            try:
                element = next(it)
            except StopIteration:
                break
            self._verify_last()
            if self.reused_memory:
                self._buffer.append(detached(element))
            else:
                self._buffer.append(element)
                if arrays_of(element):
                    self._check = (len(self._buffer) - 1, element, detached(element))
            _PENDING.add(self)
        return len(self._buffer) - self._head

    def _verify_last(self) -> None:
        """After the iterator made another element: whether that changed the one buffered before it (it fills
        one buffer again); if so, that one is put back as it was, and every later one is buffered as a copy."""
        if self._check is None:
            return
        at, element, copy = self._check
        self._check = None
        if not self.reused_memory and changed(element, copy):
            self.reused_memory = True
        if self.reused_memory and at < len(self._buffer) and self._buffer[at] is element:
            self._buffer[at] = copy

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
                if self._head == len(self._buffer):  # all replayed: nothing kept
                    self._buffer, self._head = [], 0
                    _PENDING.discard(self)
                elif self._head >= self._COMPACT_AT and self._head * 2 >= len(self._buffer):
                    del self._buffer[: self._head]
                    self._head = 0
                return item
        it = self.iterator()
        if it is None:
            raise StopIteration
        return next(it)


# The replays of iterators by id (weakly: a replay lives while a source or dataset reads it), and those holding
# peeked elements not yet delivered (kept while their iterator lives, so a later call still gets them).
_REPLAYS: weakref.WeakValueDictionary[int, _Replay] = weakref.WeakValueDictionary()
_PENDING: set[_Replay] = set()
_REGISTRY_LOCK = threading.Lock()
_OWN_REFERENCES = 2  # the replay's own reference to a strongly held iterator, and getrefcount's argument


def _forget(replay: _Replay | None) -> None:
    if replay is not None:
        _PENDING.discard(replay)


def _prune() -> None:
    """Drop the buffers of strongly held iterators that nothing but their replay references any more."""
    for replay in list(_PENDING):
        if replay._strong is not None and sys.getrefcount(replay._strong) <= _OWN_REFERENCES:
            replay._strong = None
            replay._buffer, replay._head = [], 0
            _PENDING.discard(replay)


def _prune_on_collect(phase: str, info: dict[str, Any]) -> None:
    if phase == "start" and _PENDING:
        _prune()


gc.callbacks.append(_prune_on_collect)


def replay_of(it: Iterator[Any]) -> _Replay:
    with _REGISTRY_LOCK:
        _prune()
        replay = _REPLAYS.get(id(it))
        if replay is None or replay.iterator() is not it:
            replay = _Replay(it)
            _REPLAYS[id(it)] = replay
        return replay


class StreamSource:
    """Read in order only: a generator function (called anew each pass), a re-iterable, or a one-shot iterator
    (one pass; peeked elements replayed)."""

    native_route = None
    random_access = False
    infinite = False  # not known without reading it

    def __init__(
        self,
        obj: Any,
        batched: bool | None,
        *,
        iterate: Callable[[], Iterator[Any]],
        one_shot: bool = False,
        replay: _Replay | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.obj, self._batched, self.one_shot = obj, batched, one_shot
        self._iterate, self._replay, self._transform = iterate, replay, transform
        self._peeked: tuple[int, Peek] | None = None  # the last peek, reused: a pass is started once for it

    @property
    def batched(self) -> bool:
        """As given, or decided from the elements when the kind of object has no convention (``decide_batched``)."""
        if self._batched is None:  # the elements the caller peeked decide, else a peek of our own
            peeked = self._peeked[1] if self._peeked is not None else self.peek(_DECIDE_PEEK)
            self._batched = decide_batched(peeked.samples, self.name)
        return self._batched

    @classmethod
    def of_function(cls, fn: Callable[[], Iterable[Any]], batched: bool | None) -> StreamSource:
        return cls(fn, batched, iterate=lambda: iter(fn()))

    @classmethod
    def of_iterable(cls, obj: Iterable[Any], batched: bool | None) -> StreamSource:
        return cls(obj, batched, iterate=lambda: iter(obj))

    @classmethod
    def of_iterator(cls, it: Iterator[Any], batched: bool | None) -> StreamSource:
        replay = replay_of(it)
        return cls(it, batched, iterate=lambda: replay, one_shot=True, replay=replay)

    @property
    def name(self) -> str:
        qualname = getattr(self.obj, "__qualname__", None)
        if callable(self.obj) and isinstance(qualname, str):
            return qualname
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    def length(self) -> int | None:
        return None

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task | None:
        return None

    def _map(self, elements: Iterator[Any]) -> Iterator[Any]:
        return elements if self._transform is None else map(self._transform, elements)

    def iterate(self) -> Iterator[Any]:
        return self._map(call_user(self._iterate, None))

    def peek(self, n: int) -> Peek:
        if self._peeked is None or self._peeked[0] != n:
            self._peeked = (n, self._peek(n))
        return self._peeked[1]

    def _peek(self, n: int) -> Peek:
        if self._replay is not None:
            replay = self._replay

            def produce(i: int) -> Any:
                items = call_user(replay.peek, i, i + 1)
                if len(items) <= i:
                    raise StopIteration
                return items[i] if self._transform is None else self._transform(items[i])

            peeked = timed(produce, range(n))
            peeked.reused_memory = peeked.reused_memory or replay.reused_memory
            return peeked
        it = call_user(self._iterate, None)
        try:
            return timed(lambda i: self._one(call_user(next, i, it)), range(n))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _one(self, element: Any) -> Any:
        return element if self._transform is None else self._transform(element)

    def infer(self, n: int, peek: Peek | None) -> Inference:
        return infer_from_peek(self, peek if peek is not None else self.peek(n), **self._empty())

    def _empty(self) -> dict[str, str]:
        """How an empty peek showed, and what to do, for this kind of stream."""
        if self.one_shot:
            return {
                "empty": "the iterator gave no element",
                "hint": "an iterator gives its elements only once, so one that was read before (by a loop, list() "
                "or a dataset made from it) is used up; pass a generator function or a re-iterable such as a list "
                "to read the data more than once.",
            }
        if inspect.isgeneratorfunction(self.obj):
            return {
                "empty": f"calling {self.name}() gave a generator that yielded nothing",
                "hint": "check the data the generator function reads and the conditions of its loop.",
            }
        if callable(self.obj):
            return {"empty": f"{self.name}() returned an empty iterable", "hint": "check the data it loads."}
        return {"empty": "iterating it gave no element", "hint": "check the data it holds or loads."}

    def with_label(self, label: Any) -> StreamSource:
        split = functools.partial(split_label, label=label)
        transform = split if self._transform is None else (lambda e, t=self._transform: split(t(e)))
        return StreamSource(
            self.obj, self._batched, iterate=self._iterate, one_shot=self.one_shot, replay=self._replay,
            transform=transform,
        )  # fmt: skip

    def build(self, plan: BuildPlan) -> Built:
        self._peeked = None  # the dataset (which TensorFlow keeps alive) must not keep peeked elements
        ds = _python.build_stream(plan, name=self.name, iterate=self.iterate, one_shot=self.one_shot)
        return Built(ds, batched_by_source=_python.bucketing_for(plan, stream=True) is not None)

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        """A pass that consumes nothing a later pass needs (a one-shot stream reads ahead into its replay)."""
        it = self._map(self._replay.scan()) if self._replay is not None else self.iterate()
        count = 0
        while limit is None or count < limit:
            try:
                yield call_user(next, count, it)
            except StopIteration:
                return
            count += 1

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        return check_elements(self.scan(runner, limit), spec, limit, problems)

    def parts(self, n: int) -> list[StreamSource]:
        return [self]

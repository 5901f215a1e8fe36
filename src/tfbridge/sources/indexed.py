"""Objects with ``__len__`` and ``__getitem__``: Keras PyDataset/Sequence, map-style datasets, lists of
batches, user classes. Elements are produced by index through an executor (workers, shuffling, parts)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge._checks import short
from tfbridge.errors import SourceError, SpecInferenceError, TfBridgeError
from tfbridge.sources import _python
from tfbridge.sources._base import (
    _DECIDE_PEEK,
    BuildPlan,
    Built,
    Peek,
    Problems,
    Runner,
    Task,
    call_user,
    check_elements,
    decide_batched,
    infer_from_peek,
    timed,
)
from tfbridge.sources.labels import split_label

if TYPE_CHECKING:
    from tfbridge.spec import Inference, Spec


def _identity(element: Any) -> Any:
    return element


class _Getter:
    """``transform(obj[i])``: picklable (the object and a module-level transform travel to workers)."""

    def __init__(self, obj: Any, transform: Callable[[Any], Any]) -> None:
        self.obj, self.transform = obj, transform

    def __call__(self, index: int) -> Any:
        return self.transform(self.obj[index])


class IndexedSource:
    """``obj[i]`` for ``i in range(len(obj))`` (or for the given ``indices`` only: a part, without epoch hooks);
    ``on_epoch_begin``/``on_epoch_end`` called when present."""

    native_route = None
    random_access = True
    one_shot = False
    infinite = False

    def __init__(
        self,
        obj: Any,
        batched: bool | None,
        *,
        transform: Callable[[Any], Any] = _identity,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.obj, self._batched = obj, batched
        self.transform, self.indices = transform, indices
        self._peeked: tuple[int, Peek] | None = None  # the last peek, reused: user code runs once per element

    @property
    def batched(self) -> bool:
        """As given, or decided from the elements when the kind of object has no convention (``decide_batched``)."""
        if self._batched is None:  # the elements the caller peeked decide, else a peek of our own
            peeked = self._peeked[1] if self._peeked is not None else self.peek(_DECIDE_PEEK)
            self._batched = decide_batched(peeked.samples, self.name)
        return self._batched

    @property
    def name(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    # -- size and elements ---------------------------------------------------------------------------
    def _len(self) -> int:
        counted = "len()" if hasattr(self.obj, "__len__") else "num_batches"  # a Keras 3 PyDataset may give either
        try:
            size = len(self.obj) if counted == "len()" else self.obj.num_batches
        except Exception as exc:
            msg = f"{counted} of the source {self.name} raised {type(exc).__name__}: {exc}"
            raise SourceError(msg) from exc
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
            msg = f"{counted} of the source {self.name} must be a non-negative int. Received: {short(size)}"
            raise TfBridgeError(msg)
        return int(size)

    def length(self) -> int:
        return self._len() if self.indices is None else len(self.indices)

    def _position(self, i: int) -> int:
        return i if self.indices is None else int(self.indices[i])

    def get(self, i: int) -> Any:
        """Element ``i`` as the source gives it (label split applied)."""
        return self.transform(self.obj[self._position(i)])

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task:
        return _python.IndexedTask(_Getter(self.obj, self.transform), conform)

    # -- spec ----------------------------------------------------------------------------------------------
    def peek_indices(self, n: int) -> list[int]:
        """Spread positions: first, last and evenly between."""
        size = self.length()
        if size <= 0:
            return []
        return sorted({int(i) for i in np.linspace(0, size - 1, min(n, size)).round()})

    def peek(self, n: int) -> Peek:
        if self._peeked is None or self._peeked[0] != n:
            produce = lambda i: call_user(self.get, self._position(i), i)  # noqa: E731
            self._peeked = (n, timed(produce, self.peek_indices(n), again=True))
        return self._peeked[1]

    def infer(self, n: int, peek: Peek | None) -> Inference:
        if self.length() == 0:
            kind = type(self.obj)
            hint = (
                f"the {kind.__name__} holds no elements: check the code that loads or fills it."
                if kind.__module__ == "builtins"
                else f"its {'__len__' if hasattr(self.obj, '__len__') else 'num_batches'} returned 0: check the data "
                "it loads."
            )
            msg = f"the source {self.name} is empty (len 0): there is no element to infer a spec from.\nHint: {hint}"
            raise SpecInferenceError(msg)
        return infer_from_peek(self, peek if peek is not None else self.peek(n))

    def with_label(self, label: Any) -> IndexedSource:
        split = functools.partial(split_label, label=label)
        transform = split if self.transform is _identity else _Compose(self.transform, split)
        return IndexedSource(self.obj, self._batched, transform=transform, indices=self.indices)

    # -- routes -----------------------------------------------------------------------------------------
    def build(self, plan: BuildPlan) -> Built:
        self._peeked = None  # the dataset (which TensorFlow keeps alive) must not keep peeked elements
        ds = _python.build_indexed(
            plan,
            name=self.name,
            length=self.length,
            task=self.task(_python.conformer_for(plan)),
            indices=self.indices,  # a part: exactly its indices, no epoch hooks
            on_epoch_begin=self._hook("on_epoch_begin"),
            on_epoch_end=self._hook("on_epoch_end"),
        )
        return Built(ds, batched_by_source=_python.bucketing_for(plan) is not None)

    def _hook(self, name: str) -> Callable[[], None]:
        def run() -> None:
            hook = getattr(self.obj, name, None)
            if callable(hook):
                call_user(hook, None, where=f"the source's {name}()")

        return run

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        n = self.length() if limit is None else min(limit, self.length())
        if runner is None:
            for i in range(n):
                yield call_user(self.get, self._position(i), i)
            return
        positions = [self._position(i) for i in range(n)]
        yield from runner.imap(self.task(None), positions)

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        return check_elements(self.scan(runner, limit), spec, limit, problems)

    def parts(self, n: int) -> list[IndexedSource]:
        size = self.length()
        bounds = np.linspace(0, size, min(n, max(size, 1)) + 1).round().astype(np.int64)
        base = np.arange(size) if self.indices is None else np.asarray(self.indices)
        return [
            IndexedSource(self.obj, self.batched, transform=self.transform, indices=base[a:b])
            for a, b in itertools.pairwise(bounds)
        ]


class _Compose:
    def __init__(self, first: Callable[[Any], Any], then: Callable[[Any], Any]) -> None:
        self.first, self.then = first, then

    def __call__(self, element: Any) -> Any:
        return self.then(self.first(element))

"""The three kinds every source is adapted to: Indexed, Stream and Native."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from tfbridge import spec as _spec
from tfbridge.errors import SourceError, SpecInferenceError, TfBridgeError

T = TypeVar("T")
SourceKind = Literal["indexed", "stream", "native"]


@dataclass
class Peek:
    """Sample elements and what producing them cost (the executor choice reads the costs)."""

    samples: list[tuple[int, Any]]
    wall_s: float = 0.0
    cpu_s: float = 0.0
    nbytes: int = 0
    per_element_wall_s: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.samples)


def call_user(fn: Callable[..., T], index: int | None, *args: Any) -> T:
    """Run user code; anything it raises becomes SourceError with the index and the original traceback.

    StopIteration passes through only from ``next`` (the end of a stream); from any other code it is an error.
    """
    try:
        return fn(*args)
    except TfBridgeError:
        raise
    except StopIteration as exc:
        if fn is next:
            raise
        raise source_error(exc, index) from exc
    except Exception as exc:
        raise source_error(exc, index) from exc


def source_error(exc: BaseException, index: int | None, *, remote: bool = False) -> SourceError:
    """SourceError for ``exc``. In-process the original is chained (``raise ... from exc``) so its traceback
    prints with it; from another process (``remote=True``) the traceback text goes into the message."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = f"element {index}" if index is not None else "the source"
    msg = f"{where}: {type(exc).__name__}: {exc}\nHint: the source's own code raised this (traceback above)."
    if remote:
        msg = f"{where}: {type(exc).__name__}: {exc}\nHint: the source's own code raised this; its traceback:\n{tb}"
    return SourceError(msg, index=index, traceback=tb)


def _nbytes(element: Any) -> int:
    from tfbridge import _nest

    total = 0
    for leaf in _nest.flatten(_nest.normalize(element))[0]:
        total += int(getattr(leaf, "nbytes", 0) or 0)
    return total


class Source:
    """Base of the adapted kinds. ``batched`` says whether an element is a batch."""

    kind: SourceKind
    batched: bool
    obj: Any

    @property
    def name(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    def peek(self, n: int) -> Peek:
        raise NotImplementedError

    def spec(self, peek: int) -> _spec.Spec:
        if peek < 1:
            msg = f"peek must be at least 1. Received: peek={peek}"
            raise TfBridgeError(msg)
        return _spec.infer_from_samples(self.peek(peek).samples, self.batched)

    @staticmethod
    def _timed(produce: Callable[[int], Any], indices: list[int]) -> Peek:
        out = Peek([])
        for i in indices:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                element = produce(i)
            except StopIteration:
                break
            out.per_element_wall_s.append(time.perf_counter() - wall)
            out.wall_s += out.per_element_wall_s[-1]
            out.cpu_s += time.thread_time() - cpu
            out.nbytes += _nbytes(element)
            out.samples.append((i, element))
        return out


class Indexed(Source):
    """Random access by position: ``len()`` and ``get(i)``; may be shuffled; may have epoch hooks."""

    kind: SourceKind = "indexed"

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int) -> Any:
        raise NotImplementedError

    def on_epoch_begin(self) -> None:
        """Called before each epoch (PyDataset's hook); nothing by default."""

    def on_epoch_end(self) -> None:
        """Called after each complete epoch; nothing by default."""

    def peek_indices(self, n: int) -> list[int]:
        """Spread positions: first, last and evenly between."""
        size = len(self)
        if size <= 0:
            return []
        return sorted({int(i) for i in np.linspace(0, size - 1, min(n, size)).round()})

    def peek(self, n: int) -> Peek:
        return self._timed(lambda i: call_user(self.get, i, i), self.peek_indices(n))

    def spec(self, peek: int) -> _spec.Spec:
        if len(self) == 0:
            msg = (
                f"the source {self.name} is empty (len 0): there is no element to infer a spec from.\n"
                "Hint: check that the source holds data."
            )
            raise SpecInferenceError(msg)
        return super().spec(peek)


class Stream(Source):
    """Sequential only: ``iterate()`` gives a fresh pass (one-shot streams give theirs once)."""

    kind: SourceKind = "stream"
    one_shot: bool = False

    def iterate(self) -> Iterator[Any]:
        raise NotImplementedError

    def scan(self) -> Iterator[Any]:
        """A pass that consumes nothing a later pass needs (one-shot streams read ahead into their buffer)."""
        return call_user(self.iterate, None)

    def peek(self, n: int) -> Peek:
        it = call_user(self.iterate, None)
        try:
            return self._timed(lambda i: call_user(next, i, it), list(range(n)))
        finally:
            close = getattr(it, "close", None)
            if close is not None and not self.one_shot:
                close()


class Native(Source):
    """A tf.data.Dataset: its element_spec is the truth; elements never pass through Python."""

    kind: SourceKind = "native"
    dataset: Any

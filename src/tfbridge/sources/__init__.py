"""Adapt any supported object to the kind of source that owns its route.

``adapt`` is the one dispatcher; each kind of source has its module and implements the :class:`Source`
Protocol. Order matters: tf.data first, then in-memory arrays and DataFrames (one example per row), then
objects with ``__len__``/``__getitem__`` (PyDataset, Sequence, map-style datasets: batches by the Keras
convention), then iterators (one-shot), generator functions and other iterables.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tfbridge._checks import check_batched, short
from tfbridge.errors import TfBridgeError
from tfbridge.sources import _memo
from tfbridge.sources._base import (
    BuildPlan,
    Built,
    Peek,
    Problems,
    Runner,
    Source,
    Task,
    call_user,
    check_peek,
    source_error,
)
from tfbridge.sources._memo import Found
from tfbridge.sources.arrays import ArraysSource, array_columns, dataframe_columns, is_array_nest, is_dataframe
from tfbridge.sources.indexed import IndexedSource
from tfbridge.sources.labels import Label, check_label, split_label
from tfbridge.sources.stream import StreamSource
from tfbridge.sources.tfdata import TFDataSource, ends_in_batching, is_tf_dataset, pipeline_batched

if TYPE_CHECKING:
    from tfbridge.spec import Spec


def adapt(obj: Any, *, batched: bool | None = None, label: Label | None = None) -> Source:
    """The Source for ``obj``; ``batched`` overrules the kind's default; ``label`` splits dict elements."""
    if isinstance(obj, Source):
        return obj
    check_batched(batched)
    source = _adapt(obj, batched)
    if label is None:
        return source
    check_label(label)
    return source.with_label(label)


# top-level module of a class in the object's hierarchy -> the module that reads such objects. Each has
# ``adapt(obj, batched) -> Source | None`` (None: not an object it reads) and is imported only for its objects.
_LIBRARY_ADAPTERS = {
    "datasets": "tfbridge.sources.hf",
    "torch": "tfbridge.sources.torch",
    "grain": "tfbridge.sources.grain",
    "polars": "tfbridge.sources.columns",
    "pyarrow": "tfbridge.sources.columns",
}


def _library_source(obj: Any, batched: bool | None) -> Source | None:
    import importlib

    tried: set[str] = set()
    for klass in type(obj).__mro__:
        module = _LIBRARY_ADAPTERS.get(klass.__module__.split(".")[0])
        if module is None or module in tried:
            continue
        tried.add(module)
        try:
            adapter = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the adapter exists and failed to import: that is a bug to see
                raise
            continue  # no adapter for that library yet: the generic kinds read it
        source: Source | None = adapter.adapt(obj, batched)
        if source is not None:
            return source
    return None


def _adapt(obj: Any, batched: bool | None) -> Source:
    if is_tf_dataset(obj):
        return TFDataSource(obj, batched)
    if is_array_nest(obj):  # before the libraries: a torch tensor is columns, as a numpy array is
        return ArraysSource(obj, array_columns(obj), bool(batched))
    library = _library_source(obj, batched)
    if library is not None:
        return library
    if is_dataframe(obj):
        return ArraysSource(obj, dataframe_columns(obj), bool(batched))
    if isinstance(obj, (str, bytes, dict)) or obj is None:
        return _not_a_source(obj)
    if batched is None:
        batched = convention(obj)  # None: no convention; the source decides from its elements
    if (hasattr(obj, "__len__") or counted_by_num_batches(obj)) and hasattr(obj, "__getitem__"):
        return IndexedSource(obj, batched)
    if isinstance(obj, Iterator):
        return StreamSource.of_iterator(obj, batched)
    if inspect.isgeneratorfunction(obj) or (callable(obj) and not isinstance(obj, type) and _takes_no_args(obj)):
        return StreamSource.of_function(obj, batched)
    if isinstance(obj, Iterable):
        return StreamSource.of_iterable(obj, batched)
    return _not_a_source(obj)


# (top-level module, class name) -> whether an element of such an object is a batch, by that library's convention;
# found in the object's class hierarchy, so user subclasses count, without importing the library
_CONVENTIONS: dict[tuple[str, str], bool] = {
    ("keras", "PyDataset"): True,
    ("keras", "Sequence"): True,
    ("torch", "DataLoader"): True,
    ("torch", "Dataset"): False,
    ("torch", "IterableDataset"): False,
    ("datasets", "Dataset"): False,
    ("datasets", "IterableDataset"): False,
    ("grain", "MapDataset"): False,
    ("grain", "IterDataset"): False,
}


def convention(obj: Any) -> bool | None:
    """Whether ``obj``'s elements are batches by its library's convention (None: its kind has none).

    A grain dataset whose own pipeline ends in a batch step (``BatchMapDataset``, ``BatchIterDataset``) yields
    batches."""
    for klass in type(obj).__mro__:
        top = klass.__module__.split(".")[0]
        found = _CONVENTIONS.get((top, klass.__name__))
        if found is not None:
            if top == "grain" and type(obj).__name__.startswith("Batch"):
                return True
            if top == "torch" and klass.__name__ == "DataLoader" and getattr(obj, "batch_size", 1) is None:
                return False  # a loader made with batch_size=None hands out single examples
            return found
    return None


def counted_by_num_batches(obj: Any) -> bool:
    """A Keras ``PyDataset`` that gives its length by its ``num_batches`` property (Keras 3's way) instead of
    ``__len__``: indexed like one with ``__len__``. ``num_batches`` None (an infinite PyDataset) is a stream."""
    if hasattr(obj, "__len__") or not any(
        k.__name__ == "PyDataset" and k.__module__.split(".")[0] == "keras" for k in type(obj).__mro__
    ):
        return False
    try:
        count = obj.num_batches
    except Exception:  # Keras's own NotImplementedError, or the user's property failing: not counted
        return False
    return hasattr(count, "__index__") and not isinstance(count, bool)  # an int (numpy's too); None: infinite


def _takes_no_args(fn: Any) -> bool:
    try:
        inspect.signature(fn).bind()
    except (TypeError, ValueError):
        return False
    return True


def _not_a_source(obj: Any) -> Source:
    msg = (
        f"{type(obj).__name__} is not a data source. Received: {short(obj)}\n"
        "Hint: pass a tf.data.Dataset, a keras.utils.PyDataset/Sequence, an object with __len__ and "
        "__getitem__, a generator (function), an iterable, numpy arrays (or a tuple/dict of them) or a "
        "pandas DataFrame."
    )
    raise TfBridgeError(msg)


def examine(
    obj: Any, n: int, *, batched: bool | None = None, label: Label | None = None
) -> tuple[Source, Found, Peek | None]:
    """``obj`` adapted, with what a peek of ``n`` elements found (its spec and costs) and the peek itself.

    Findings about an object whose peek runs the user's code (indexed sources, re-iterable streams) are
    remembered while it lives (``_memo``): a later call on the same object reuses them and the peek is None."""
    src = adapt(obj, batched=batched, label=label)
    memo = isinstance(src, (IndexedSource, StreamSource)) and not src.one_shot and not isinstance(obj, Source)
    key = (type(src).__name__, n, batched, label if isinstance(label, str | None) else tuple(label), src.length())
    if memo:
        found = _memo.recall(obj, key)
        if found is not None:
            if batched is None:  # the remembered spec says how the elements were taken
                src = adapt(obj, batched=found.inference.spec.batched, label=label)
            return src, found, None
    peeked = src.peek(n) if src.native_route is None else None
    inference = src.infer(n, peeked)
    costs = peeked.steady() if peeked is not None else (0.0, 0.0, 0, 0, 0.0)
    found = _memo.Found(inference, *costs, reused_memory=peeked is not None and peeked.reused_memory)
    if memo:
        _memo.remember(obj, key, found)
    return src, found, peeked


def infer_spec(source: Any, peek: int = 8, batched: bool | None = None, *, label: Label | None = None) -> Spec:
    """The spec of ``source``'s elements, read from the data (see docs/GUIDE.md: batched or not, merging
    samples, the float policy). ``peek``: how many elements to read (indexed sources at spread positions: first,
    last and between). ``batched`` overrules the kind's default. ``label`` splits label columns off
    dict-shaped elements. The spec reports the data as it is (float64 stays float64)."""
    check_peek(peek)
    return examine(source, peek, batched=batched, label=label)[1].inference.spec


__all__ = [
    "ArraysSource",
    "BuildPlan",
    "Built",
    "Found",
    "IndexedSource",
    "Peek",
    "Problems",
    "Runner",
    "Source",
    "StreamSource",
    "TFDataSource",
    "Task",
    "adapt",
    "call_user",
    "convention",
    "ends_in_batching",
    "examine",
    "infer_spec",
    "pipeline_batched",
    "source_error",
    "split_label",
]

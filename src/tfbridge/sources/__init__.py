"""Adapt any supported object to one of three kinds: Indexed, Stream or Native.

``adapt`` is the one dispatcher; each kind of source has its module. Order matters: tf.data first, then
in-memory arrays and DataFrames (one example per row), then objects with ``__len__``/``__getitem__``
(PyDataset, Sequence, map-style datasets: batches by the Keras convention), then iterators (one-shot),
generator functions and other iterables.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from tfbridge import spec as _spec
from tfbridge.errors import TfBridgeError, short
from tfbridge.sources._base import (
    Indexed,
    Native,
    Peek,
    Source,
    Stream,
    call_user,
    source_error,
)
from tfbridge.sources.arrays import (
    Arrays,
    dataframe_columns,
    is_array_nest,
    is_dataframe,
)
from tfbridge.sources.indexed import IndexedObject
from tfbridge.sources.labels import Label, LabelledIndexed, LabelledStream, split_label
from tfbridge.sources.stream import GeneratorFunction, OneShot, ReIterable
from tfbridge.sources.tfdata import TFDataSource

_PER_EXAMPLE_MODULES = ("torch", "datasets")  # map-style datasets there return one example per index


def _is_tf_dataset(obj: Any) -> bool:
    mod = type(obj).__module__
    if not mod.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(obj, tf.data.Dataset)


def adapt(obj: Any, *, batched: bool | None = None, label: Label | None = None) -> Source:
    """The Source for ``obj``; ``batched`` overrules the kind's default; ``label`` splits dict elements."""
    if isinstance(obj, Source):
        return obj
    if batched is not None and not isinstance(batched, bool):
        msg = f"batched must be True, False or None. Received: {short(batched)}"
        raise TfBridgeError(msg)
    source = _adapt(obj, batched)
    if label is None:
        return source
    if isinstance(source, Arrays):
        if not isinstance(source.columns, dict):
            split_label(source.columns, label)  # raises the explanatory error
        return Arrays(obj, split_label(source.columns, label), source.batched)
    if isinstance(source, TFDataSource):
        return TFDataSource(source.dataset.map(lambda *e: split_label(e[0] if len(e) == 1 else e, label)), batched)
    if isinstance(source, Indexed):
        return LabelledIndexed(source, label)
    return LabelledStream(source, label)


def _adapt(obj: Any, batched: bool | None) -> Source:
    if _is_tf_dataset(obj):
        return TFDataSource(obj, batched)
    if is_dataframe(obj):
        return Arrays(obj, dataframe_columns(obj), bool(batched))
    if is_array_nest(obj):
        return Arrays(obj, obj, bool(batched))
    if isinstance(obj, (str, bytes, dict)) or obj is None:
        return _not_a_source(obj)
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        per_example = type(obj).__module__.split(".")[0] in _PER_EXAMPLE_MODULES
        return IndexedObject(obj, (not per_example) if batched is None else batched)
    if isinstance(obj, Iterator):
        return OneShot(obj, True if batched is None else batched)
    if inspect.isgeneratorfunction(obj) or (callable(obj) and not isinstance(obj, type) and _takes_no_args(obj)):
        return GeneratorFunction(obj, True if batched is None else batched)
    if isinstance(obj, Iterable):
        return ReIterable(obj, True if batched is None else batched)
    return _not_a_source(obj)


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


def infer_spec(source: Any, peek: int = 8, batched: bool | None = None) -> _spec.Spec:
    """The spec of ``source``'s elements, from the data (see DESIGN: batched, merging, float policy)."""
    return adapt(source, batched=batched).spec(peek)


__all__ = [
    "Arrays",
    "GeneratorFunction",
    "Indexed",
    "IndexedObject",
    "Native",
    "OneShot",
    "Peek",
    "ReIterable",
    "Source",
    "Stream",
    "TFDataSource",
    "adapt",
    "call_user",
    "infer_spec",
    "source_error",
]

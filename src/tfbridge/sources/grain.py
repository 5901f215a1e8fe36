"""grain datasets and DataLoaders, read through the generic kinds of source.

Imported only for objects whose class hierarchy has a ``grain`` class (``sources.adapt``), so ``import tfbridge``
never imports grain; grain itself is imported inside :func:`adapt`.

- a ``grain.MapDataset`` (``MapDataset.source(...).map(f)``, ...) is an :class:`IndexedSource`: workers,
  shuffling and parts apply. A pipeline with a ``filter`` (whose filtered-out indices hold ``None``) or one that
  repeats forever is read in order instead (``iter(dataset)``), the latter as an infinite stream;
- a ``grain.IterDataset`` and a ``grain.DataLoader`` are streams, a new ``iter(...)`` each pass;
- grain's own data sources (``RangeDataSource``, ``ArrayRecordDataSource``, ...) are indexed, one record per
  index.

An element is one example unless the grain pipeline itself batches (:func:`pipeline_batches`). grain's elements
are numpy already and keep their structure (dicts, tuples).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from tfbridge.sources._base import Source
from tfbridge.sources.indexed import IndexedSource
from tfbridge.sources.stream import StreamSource


def adapt(obj: Any, batched: bool | None) -> Source | None:
    """The source for a grain dataset, DataLoader or data source; None for any other grain object."""
    import grain  # type: ignore[import-untyped]

    if isinstance(obj, grain.MapDataset):
        batched = pipeline_batches(obj) if batched is None else batched
        if _infinite(obj):
            stream = StreamSource(obj, batched, iterate=functools.partial(iter, obj))
            stream.infinite = True
            return stream
        if _filters(obj):  # an index may hold None (filtered out): only iteration skips those
            return StreamSource(obj, batched, iterate=functools.partial(iter, obj))
        return IndexedSource(obj, batched)
    if isinstance(obj, grain.IterDataset):
        batched = pipeline_batches(obj) if batched is None else batched
        return StreamSource(obj, batched, iterate=functools.partial(iter, obj))
    if isinstance(obj, grain.DataLoader):
        if batched is None:  # decided by the pipeline the loader built from its operations, when it can be read
            pipeline = getattr(obj, "_dataset", None)
            batched = pipeline_batches(pipeline) if pipeline is not None else None
        return StreamSource(obj, batched, iterate=functools.partial(iter, obj))
    if _is_data_source(obj):  # one record per index
        return IndexedSource(obj, False if batched is None else batched)
    return None


def _is_data_source(obj: Any) -> bool:
    """One of grain's data sources (``RangeDataSource``, ``ArrayRecordDataSource``, ...) or a subclass of one."""
    grain_classes = [k for k in type(obj).__mro__ if k.__module__.split(".")[0] == "grain"]
    return any(k.__name__.endswith("DataSource") for k in grain_classes) and hasattr(obj, "__getitem__")


# grain's steps that give their parent's elements (changed or not, but one example stays one example and one batch
# one batch), by class name; the walk for whether a pipeline batches goes back through them
_KEEPS_ELEMENTS = frozenset({
    "MapMapDataset", "RandomMapMapDataset", "MapWithIndexMapDataset", "MapIterDataset", "RandomMapIterDataset",
    "MapWithIndexIterDataset", "ShuffleMapDataset", "WindowShuffleMapDataset", "WindowShuffleIterDataset",
    "SliceMapDataset", "RepeatMapDataset", "RepeatIterDataset", "FilterMapDataset", "FilterIterDataset",
    "PrefetchIterDataset", "ThreadPrefetchIterDataset", "ProcessPrefetchIterDataset", "LimitIterDataset",
    "CacheIterDataset", "WithOptionsIterDataset", "_WithSeedMapDataset", "_WithSeedIterDataset",
    "_MpContextIterDataset", "_LazyWorkerSliceIterDataset", "_OutputIterDataset", "_SamplerMapDataset",
    "_DataLoaderStateIterDataset", "_DataLoaderPipelineMarkerIterDataset",
})  # fmt: skip
# steps that combine their parents element by element: batches when every parent gives batches
_COMBINES = frozenset({"ZipMapDataset", "ZipIterDataset", "MixedMapDataset", "MixedIterDataset",
                       "ConcatenateMapDataset"})  # fmt: skip
_BATCHES = frozenset({"BatchMapDataset", "BatchIterDataset", "RebatchIterDataset"})


def pipeline_batches(ds: Any) -> bool:
    """Whether a grain pipeline's elements are batches: it ends in ``batch`` (or ``rebatch``), looking back
    through the steps that keep elements (map, shuffle, slice, repeat, filter, prefetch, ...); ``zip`` and
    ``mix`` batch when all their parents do. Any other step (a source, ``flat_map``, packing, ``interleave``, a
    class of your own) gives examples."""
    while True:
        kind = type(ds).__name__ if type(ds).__module__.startswith("grain.") else ""
        parents = list(getattr(ds, "parents", ()))
        if kind in _BATCHES:
            return True
        if kind in _COMBINES:
            return bool(parents) and all(pipeline_batches(p) for p in parents)
        if kind not in _KEEPS_ELEMENTS or len(parents) != 1:
            return False
        ds = parents[0]


def _infinite(ds: Any) -> bool:
    """A MapDataset that repeats forever (grain gives it ``len == sys.maxsize``), also when later steps that keep
    its length or batch it follow."""
    size = len(ds)
    while size < sys.maxsize:
        parents = list(getattr(ds, "parents", ()))
        if len(parents) != 1:
            return False
        parent_size = len(parents[0])
        if parent_size != size and type(ds).__name__ not in _BATCHES:
            return False  # e.g. a slice: finite whatever its parent is
        ds, size = parents[0], parent_size
    return True


def _filters(ds: Any) -> bool:
    """Whether a MapDataset pipeline has a filter anywhere (its filtered-out indices hold None)."""
    todo = [ds]
    while todo:
        node = todo.pop()
        if type(node).__name__ == "FilterMapDataset":
            return True
        todo.extend(getattr(node, "parents", ()))
    return False

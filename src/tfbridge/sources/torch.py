"""torch datasets and DataLoaders, read through the generic kinds of source.

Imported only for objects whose class hierarchy has a ``torch`` class (``sources.adapt``), so ``import tfbridge``
never imports torch; torch itself is imported inside the functions that need it.

- a map-style ``torch.utils.data.Dataset`` (any subclass: ``TensorDataset``, ``Subset``, user classes) is an
  :class:`IndexedSource`, one example per index (unless ``batched=True``): workers, shuffling and parts apply;
- an ``IterableDataset`` is a :class:`StreamSource` of examples;
- a ``DataLoader`` is a stream of its batches (examples when it does not batch: ``batch_size=None``), iterated
  anew each pass (so a shuffling loader reshuffles every epoch). A collated list ``[xb, yb]`` is taken as the
  tuple ``(xb, yb)`` (Keras's ``(x, y)`` split), and when the loader has a length (a map-style dataset) it is the
  dataset's cardinality.

Every ``torch.Tensor`` in an element becomes a numpy array (:func:`to_numpy`, a module-level function so worker
processes unpickle it): detached and on the CPU, dtype kept (``bfloat16`` and the float8 types as their
``ml_dtypes`` numpy types; float8 is then refused by name, tfbridge does not carry it). A tensor numpy cannot
hold (``complex32``, a sparse layout, ...) is reported as no tensor, naming the element and the field.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tfbridge import _nest
from tfbridge._values import torch_to_numpy
from tfbridge.errors import TfBridgeError
from tfbridge.sources._base import BuildPlan, Built, Source
from tfbridge.sources.indexed import IndexedSource
from tfbridge.sources.stream import StreamSource


def adapt(obj: Any, batched: bool | None) -> Source | None:
    """The source for a torch dataset or DataLoader; None for any other torch object."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(obj, DataLoader):
        return LoaderSource(obj, _loader_batches(obj) if batched is None else batched)
    examples = False if batched is None else batched
    if isinstance(obj, IterableDataset):
        return StreamSource(obj, examples, iterate=functools.partial(iter, obj), transform=to_numpy)
    if isinstance(obj, Dataset):
        if not hasattr(obj, "__len__"):
            msg = (
                f"the torch Dataset {type(obj).__module__}.{type(obj).__qualname__} has no __len__: a map-style "
                "dataset is read by index, 0 to len(dataset) - 1.\n"
                "Hint: define __len__, make it a torch.utils.data.IterableDataset (read in order), or pass a "
                "DataLoader over it."
            )
            raise TfBridgeError(msg)
        return IndexedSource(obj, examples, transform=to_numpy)
    return None


# -- elements ------------------------------------------------------------------------------------------------


def to_numpy(element: Any) -> Any:
    """``element`` with every torch tensor as a numpy array (mappings as dicts); picklable for worker processes."""
    return _nest.map_structure(_leaf_to_numpy, _nest.normalize(element))


def batch_to_numpy(batch: Any) -> Any:
    """:func:`to_numpy` of a DataLoader's batch; a top-level list (``default_collate`` of a tuple) as a tuple."""
    batch = to_numpy(batch)
    if isinstance(batch, list) and not _nest.is_data_list(batch):
        return tuple(batch)
    return batch


def _leaf_to_numpy(value: Any) -> Any:
    if not type(value).__module__.startswith("torch"):
        return value
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    return torch_to_numpy(value)


# -- DataLoader ------------------------------------------------------------------------------------------------


def _loader_batches(loader: Any) -> bool:
    """A DataLoader batches unless made with ``batch_size=None`` (then it has no batch sampler)."""
    return getattr(loader, "batch_sampler", None) is not None


def loader_length(loader: Any) -> int | None:
    """``len(loader)`` when the loader reads a map-style dataset (batches per epoch); None otherwise."""
    from torch.utils.data import IterableDataset

    if isinstance(getattr(loader, "dataset", None), IterableDataset):
        return None  # torch's length of an iterable dataset's loader is an estimate, not a promise
    try:
        size = len(loader)
    except (TypeError, NotImplementedError):  # a dataset or sampler without __len__
        return None
    return size if isinstance(size, int) and size >= 0 else None


class LoaderSource(StreamSource):
    """A torch DataLoader: the stream of its batches, each pass a new ``iter(loader)``; ``len(loader)`` (when it
    has one) is the length, and so the cardinality of the dataset."""

    def __init__(
        self, loader: Any, batched: bool | None, *, transform: Callable[[Any], Any] | None = batch_to_numpy
    ) -> None:
        super().__init__(loader, batched, iterate=functools.partial(iter, loader), transform=transform)

    def length(self) -> int | None:
        return loader_length(self.obj)

    def with_label(self, label: Any) -> LoaderSource:
        labelled = super().with_label(label)
        return LoaderSource(self.obj, self._batched, transform=labelled._transform)

    def build(self, plan: BuildPlan) -> Built:
        built = super().build(plan)
        size = self.length()
        if size is None or plan.errors is not None:  # a failing pass (materialize) ends short, without an error
            return built
        if plan.shard is not None:  # every pipeline reads the whole stream and keeps every k-th batch
            size = len(range(plan.shard[1], size, plan.shard[0]))
        import tensorflow as tf

        return Built(built.dataset.apply(tf.data.experimental.assert_cardinality(size)), built.batched_by_source)

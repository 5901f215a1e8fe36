"""tf.data datasets. The spec is the dataset's own ``element_spec``; whether an element is a batch is read
from the pipeline: it is batched when it ends in a batching step (batch, padded_batch, ragged_batch,
bucket_by_sequence_length), looking through steps that keep elements whole (map, prefetch, cache, ...)."""

from __future__ import annotations

import weakref
from typing import Any

from tfbridge import _nest
from tfbridge import spec as _spec
from tfbridge.errors import SpecInferenceError, TfBridgeError
from tfbridge.sources._base import Native, Peek, call_user

_BATCHING = (
    "_BatchDataset",
    "_ParallelBatchDataset",
    "_PaddedBatchDataset",
    "_DenseToRaggedDataset",
    "_DenseToSparseBatchDataset",
    "_RebatchDataset",
    "_MapAndBatchDataset",
)
_PASS_THROUGH = (
    "_MapDataset",
    "_ParallelMapDataset",
    "_PrefetchDataset",
    "_CacheDataset",
    "_RepeatDataset",
    "_ShuffleDataset",
    "_TakeDataset",
    "_SkipDataset",
    "_FilterDataset",
    "_OptionsDataset",
    "_AssertCardinalityDataset",
    "_ShardDataset",
    "_IgnoreErrorsDataset",
    "_ApplyOptionsDataset",
    "_ModelDataset",
    "_OptimizeDataset",
    "_MaxIntraOpParallelismDataset",
    "_PrivateThreadPoolDataset",
)


_KNOWN: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def remember(dataset: Any, batched: bool) -> None:
    """Record whether a dataset tfbridge built yields batches (its own internal steps would mislead)."""
    _KNOWN[dataset] = batched


def ends_in_batching(dataset: Any) -> bool:
    node, hops = dataset, 0
    while node is not None and hops < 1000:
        known = _KNOWN.get(node)
        if known is not None:
            return known
        name = type(node).__name__
        if name in _BATCHING:
            return True
        if name == "_GroupByWindowDataset":  # bucket_by_sequence_length batches inside its windows
            return True
        if name == "_ZipDataset":  # batched when everything zipped is
            parts = _nest.flatten(_nest.normalize(getattr(node, "_datasets", ())))[0]
            return bool(parts) and all(ends_in_batching(d) for d in parts)
        if name == "_ConcatenateDataset":
            return ends_in_batching(node._input_dataset) and ends_in_batching(node._dataset_to_concatenate)
        if name == "_UnbatchDataset" or name not in _PASS_THROUGH:
            return False
        node, hops = getattr(node, "_input_dataset", None), hops + 1
    return False


class TFDataSource(Native):
    def __init__(self, dataset: Any, batched: bool | None) -> None:
        self.obj = self.dataset = dataset
        self.batched = ends_in_batching(dataset) if batched is None else batched

    @property
    def name(self) -> str:
        return f"tf.data.Dataset ({type(self.dataset).__name__.strip('_')})"

    def peek(self, n: int) -> Peek:
        it = iter(self.dataset.take(n))
        return self._timed(lambda i: call_user(next, i, it), list(range(n)))

    def spec(self, peek: int) -> _spec.Spec:
        try:
            static = _spec.Spec.from_signature(self.dataset.element_spec, batched=self.batched)
        except TfBridgeError:
            # some field has unknown rank (e.g. after py_function): read it off sample elements
            return super().spec(peek)
        if self.batched:
            for path, leaf in static.fields():
                if leaf.rank == 0:
                    msg = (
                        f"the dataset is batched but {path} is a scalar ({leaf.describe()}).\n"
                        "Hint: pass batched=False if each element is a single example."
                    )
                    raise SpecInferenceError(msg, path=path)
            structure = _nest.map_structure(
                lambda lf: _spec.Leaf((None,) + lf.shape[1:], lf.dtype, lf.kind, lf.ragged_rank), static.structure
            )
            return _spec.Spec(structure, True)
        return static

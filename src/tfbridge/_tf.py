"""Every use of TensorFlow beyond its public API, in one place, each probed so that a TensorFlow release that
changes it fails with a message saying what changed instead of a raw AttributeError deep in a pipeline.

Also the first import of TensorFlow itself (:func:`tf`), which says how to install it when it is missing:
tfbridge does not depend on one TensorFlow distribution (``tensorflow``, ``tensorflow-cpu``, ...), so that
installing tfbridge never replaces the one a user has.

TensorFlow is imported inside the functions: ``import tfbridge`` stays light.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from tfbridge.errors import TfBridgeError

MIN_TF_VERSION = (2, 16)
TESTED_TF_VERSION = "2.21.0"

# Class names of tf.data's Python dataset wrappers (private; stable across 2.16-2.21). Batching steps make an
# element a batch; pass-through steps keep elements whole, so what they wrap decides.
BATCHING_DATASETS = frozenset(
    {
        "_BatchDataset",
        "_ParallelBatchDataset",
        "_PaddedBatchDataset",
        "_DenseToRaggedDataset",
        "_DenseToSparseBatchDataset",
        "_RebatchDataset",
        "_MapAndBatchDataset",
        "_GroupByWindowDataset",  # bucket_by_sequence_length batches inside its windows
    }
)
PASS_THROUGH_DATASETS = frozenset(
    {
        "_MapDataset",
        "_ParallelMapDataset",
        "_PrefetchDataset",
        "_CacheDataset",
        "CacheDataset",  # TensorFlow 2.21 renamed it
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
    }
)
# Steps that start a pipeline of single examples (a row, a record, a line, a number each).
EXAMPLE_SOURCE_DATASETS = frozenset(
    {
        "_TensorSliceDataset",
        "_RangeDataset",
        "TFRecordDatasetV2",
        "_TFRecordDataset",
        "TextLineDatasetV2",
        "_TextLineDataset",
        "FixedLengthRecordDatasetV2",
        "_FixedLengthRecordDataset",
        "_UnbatchDataset",
    }
)
# tf.data's own base class of the steps that keep every element's structure (shuffle, prefetch, take, filter...)
_UNCHANGED_STRUCTURE_BASE = "UnaryUnchangedStructureDataset"
_TAG = "_tfbridge_batched"  # set on the datasets tfbridge builds: whether an element is a batch


class TensorFlowChanged(TfBridgeError):
    """A TensorFlow internal tfbridge relies on is not what it was (a TensorFlow release changed it)."""


def changed(what: str, exc: BaseException | None = None) -> TensorFlowChanged:
    import tensorflow as tf

    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    msg = (
        f"TensorFlow {tf.__version__} no longer provides {what}{detail}, which tfbridge relies on.\n"
        f"Hint: tfbridge is tested with TensorFlow {TESTED_TF_VERSION}; install a TensorFlow from "
        f"{'.'.join(map(str, MIN_TF_VERSION))} to {TESTED_TF_VERSION}, or report this to tfbridge."
    )
    return TensorFlowChanged(msg)


def tf() -> ModuleType:
    """``tensorflow``, or TfBridgeError saying how to install it (and which versions tfbridge supports)."""
    try:
        module = importlib.import_module("tensorflow")
    except ImportError as exc:
        msg = (
            "tfbridge needs TensorFlow, which is not installed.\n"
            'Hint: pip install "tfbridge[cpu]" (tensorflow-cpu) or "tfbridge[tensorflow]" (the standard build), '
            "or install the TensorFlow build you use yourself."
        )
        raise TfBridgeError(msg) from exc
    version = tuple(int(p) for p in module.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_TF_VERSION:
        msg = (
            f"tfbridge needs TensorFlow {'.'.join(map(str, MIN_TF_VERSION))} or newer; this is "
            f"{module.__version__}.\nHint: pip install -U tensorflow (or tensorflow-cpu)."
        )
        raise TfBridgeError(msg)
    return module


# ---- the structure of a tf.data pipeline ------------------------------------------------------------------


def dataset_kind(node: Any) -> str:
    """The class name of one step of a tf.data pipeline (e.g. ``_BatchDataset``)."""
    return type(node).__name__


def keeps_elements(node: Any) -> bool:
    """Whether one step of a pipeline hands on elements whole (a batch stays a batch, an example an example)."""
    if dataset_kind(node) in PASS_THROUGH_DATASETS:
        return True
    return any(klass.__name__ == _UNCHANGED_STRUCTURE_BASE for klass in type(node).__mro__)


def dataset_inputs(node: Any) -> list[Any]:
    """The datasets one step of a pipeline reads from (none for a source step)."""
    kind = dataset_kind(node)
    try:
        if kind == "_ZipDataset":
            from tfbridge import _nest

            return list(_nest.flatten(_nest.normalize(node._datasets))[0])
        if kind == "_ConcatenateDataset":
            return [node._input_dataset, node._dataset_to_concatenate]
        if kind == "_DirectedInterleaveDataset":  # sample_from_datasets, choose_from_datasets: the data (no selector)
            return list(node._data_inputs)
        inner = getattr(node, "_input_dataset", None)
    except AttributeError as exc:
        raise changed(f"the inputs of tf.data's {kind}", exc) from None
    if inner is None and (kind in BATCHING_DATASETS | PASS_THROUGH_DATASETS or keeps_elements(node)):
        raise changed(f"_input_dataset on tf.data's {kind}")
    return [] if inner is None else [inner]


def tag_batched(dataset: Any, batched: bool) -> Any:
    """Record on a dataset tfbridge built whether its elements are batches (its own internal steps would mislead
    a later look at its pipeline). The fact lives on the dataset object and goes with it."""
    setattr(dataset, _TAG, batched)
    return dataset


_REBUILD = "_tfbridge_rebuild"


def tag_rebuild(dataset: Any, rebuild: Any) -> Any:
    """Keep on a dataset tfbridge built how to build it again with other batching (``pad_batch`` of it pads where
    the rows are gathered). Only the object itself carries it: a dataset made from it by another step does not."""
    setattr(dataset, _REBUILD, rebuild)
    return dataset


def rebuild_of(dataset: Any) -> Any:
    return getattr(dataset, _REBUILD, None)


def tagged_batched(node: Any) -> bool | None:
    value = getattr(node, _TAG, None)
    return value if isinstance(value, bool) else None


def variant_tensor(dataset: Any) -> Any:
    """The dataset's variant tensor: the only handle on its serialized graph."""
    try:
        return dataset._variant_tensor
    except AttributeError as exc:
        raise changed("Dataset._variant_tensor", exc) from None


def graph_def(serialized: bytes) -> Any:
    """A ``GraphDef`` parsed from ``serialized``."""
    try:
        graph = tf().compat.v1.GraphDef()
    except AttributeError as exc:
        raise changed("tf.compat.v1.GraphDef", exc) from None
    graph.ParseFromString(serialized)
    return graph


def loosen_shape(value: Any, rank: int) -> Any:
    """``value`` with every static dimension forgotten (so ``ensure_shape`` can then set the spec's). Runs inside
    traced tf.data functions: a plain import (AutoGraph would try to convert importlib's machinery)."""
    import tensorflow

    try:
        placeholder = tensorflow.compat.v1.placeholder_with_default
    except AttributeError as exc:
        raise changed("tf.compat.v1.placeholder_with_default", exc) from None
    return placeholder(value, shape=[None] * rank)


def server_address(server: Any) -> str:
    """``host:port`` of a tf.data service server (WorkerServer has no public address)."""
    target = getattr(server, "target", None)
    if isinstance(target, str):
        return target.split("://", 1)[-1]
    try:
        return str(server._address)
    except AttributeError as exc:
        raise changed("the address of a tf.data service server (_address)", exc) from None


def snapshot_metadata() -> Any:
    """An empty ``SnapshotMetadataRecord`` (the metadata file of ``Dataset.save``'s layout)."""
    try:
        from tensorflow.core.protobuf import snapshot_pb2
    except ImportError as exc:
        raise changed("tensorflow.core.protobuf.snapshot_pb2 (Dataset.save's metadata)", exc) from None
    return snapshot_pb2.SnapshotMetadataRecord()

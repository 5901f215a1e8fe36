"""tfbridge: turn any training-data source into correct, fast TensorFlow/Keras input."""

from tfbridge.batching import bucket_boundaries, pad_batch
from tfbridge.errors import (
    ElementTimeoutError,
    NonFiniteError,
    SourceError,
    SpecInferenceError,
    SpecMismatchError,
    TfBridgeError,
    TfBridgeWarning,
    WorkerDiedError,
)
from tfbridge.executors import ExecutorOptions
from tfbridge.keras import adapt_normalization, keras_inputs, resume_callback
from tfbridge.materialize import materialize
from tfbridge.pipeline import to_dataset
from tfbridge.pipeline import validate_source as validate
from tfbridge.report import inspect
from tfbridge.service import distribute
from tfbridge.sources import infer_spec
from tfbridge.spec import Leaf, Spec

__version__ = "0.1.0"

__all__ = [
    "ElementTimeoutError",
    "ExecutorOptions",
    "Leaf",
    "NonFiniteError",
    "SourceError",
    "Spec",
    "SpecInferenceError",
    "SpecMismatchError",
    "TfBridgeError",
    "TfBridgeWarning",
    "WorkerDiedError",
    "adapt_normalization",
    "bucket_boundaries",
    "distribute",
    "infer_spec",
    "inspect",
    "keras_inputs",
    "materialize",
    "pad_batch",
    "resume_callback",
    "to_dataset",
    "validate",
]

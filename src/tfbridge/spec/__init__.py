"""The Spec value (``_model``), inference from samples (``_infer``), JSON (``_json``) and code (``_code``)."""

from tfbridge.spec._infer import Inference, SpecBuilder, infer, infer_from_samples
from tfbridge.spec._model import (
    CastFloats,
    Kind,
    Leaf,
    Spec,
    add_batch_axis,
    apply_float_policy,
    float_target,
    format_shape,
    input_names,
    lists_as_tuples,
)

__all__ = [
    "CastFloats",
    "Inference",
    "Kind",
    "Leaf",
    "Spec",
    "SpecBuilder",
    "add_batch_axis",
    "apply_float_policy",
    "float_target",
    "format_shape",
    "infer",
    "infer_from_samples",
    "input_names",
    "lists_as_tuples",
]

"""Keras side: ``keras_inputs`` builds the ``keras.Input`` nest for a source or spec."""

from __future__ import annotations

from typing import Any

from tfbridge import _nest, sources
from tfbridge.errors import TfBridgeError, short
from tfbridge.spec import CastFloats, Leaf, Spec, apply_float_policy


def _is_signature(obj: Any) -> bool:
    if isinstance(obj, (tuple, list, dict)) or type(obj).__module__.startswith("tensorflow"):
        leaves = _nest.flatten(_nest.normalize(obj))[0]
        if leaves and all(type(v).__name__.endswith("Spec") and hasattr(v, "shape") for v in leaves):
            return True
    return False


def keras_inputs(
    source_or_spec: Any,
    *,
    peek: int = 8,
    batched: bool | None = None,
    cast_floats: CastFloats = "floatx",
) -> Any:
    """``keras.Input`` tensors for the features of a source, a Spec, or a signature nest.

    Returns one KerasTensor, or the same tuple/list/dict nest as the features. Shapes leave out the batch
    axis; dtypes follow the data (float64 becomes ``keras.config.floatx()`` unless ``cast_floats=None``);
    dict keys become input names; ragged and sparse fields get ``ragged=True`` / ``sparse=True``.
    """
    import keras

    if isinstance(source_or_spec, Spec):
        spec = source_or_spec
    elif _is_signature(source_or_spec):
        spec = Spec.from_signature(source_or_spec, batched=batched)
    else:
        spec = sources.infer_spec(source_or_spec, peek=peek, batched=batched)
    spec = apply_float_policy(spec, cast_floats)
    features = _nest.keras_split(spec.structure)[0]
    paths, leaves, treespec = _nest.flatten_with_paths(features)
    used: set[str] = set()
    out = []
    for path, leaf in zip(paths, leaves):
        name = "_".join(str(k) for k in path if isinstance(k, str)) or None
        if name is not None:
            if name in used:
                msg = f"two feature fields would both be named {name!r}. Received: {short(path)}"
                raise TfBridgeError(msg)
            used.add(name)
        out.append(_input(keras, leaf, spec.batched, name))
    return _nest.unflatten(treespec, out)


def _input(keras: Any, leaf: Leaf, batched: bool, name: str | None) -> Any:
    shape = leaf.shape[1:] if batched else leaf.shape
    kwargs: dict[str, Any] = {"shape": shape, "dtype": leaf.dtype}
    if leaf.kind == "ragged":
        kwargs["ragged"] = True
    if leaf.kind == "sparse":
        kwargs["sparse"] = True
    if name is not None:
        kwargs["name"] = name
    return keras.Input(**kwargs)

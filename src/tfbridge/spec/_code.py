"""spec.code(): self-contained Python that rebuilds ``output_signature`` and the ``keras.Input`` nest, with the
names and float policy ``keras_inputs`` uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfbridge import _nest
from tfbridge.spec._model import Leaf, Spec, format_shape, input_names, lists_as_tuples


def render_code(spec: Spec) -> str:
    """``spec`` (float policy already applied) as code defining ``output_signature`` and ``inputs``."""
    features = _nest.keras_split(spec.structure)[0]
    names = iter(input_names(features))
    batched = spec.batched

    def keras_input(leaf: Leaf) -> str:
        shape = leaf.shape[1:] if batched else leaf.shape
        args = [f"shape={format_shape(shape)}", f'dtype="{leaf.dtype}"']
        if leaf.kind == "ragged":
            args.append("ragged=True")
        if leaf.kind == "sparse":
            args.append("sparse=True")
        name = next(names)
        if name is not None:
            args.append(f"name={name!r}")
        return f"keras.Input({', '.join(args)})"

    return (
        "import keras\n"
        "import tensorflow as tf\n\n"
        f"output_signature = {_render(lists_as_tuples(spec.structure), _type_spec, 0)}\n\n"
        f"inputs = {_render(features, keras_input, 0)}\n"
    )


def _type_spec(leaf: Leaf) -> str:
    dtype = f"tf.{leaf.dtype}"
    if leaf.kind == "ragged":
        return f"tf.RaggedTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype}, ragged_rank={leaf.ragged_rank})"
    if leaf.kind == "sparse":
        return f"tf.SparseTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"
    return f"tf.TensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"


def _render(node: Any, leaf_fn: Callable[[Leaf], str], depth: int) -> str:
    """Leaves are rendered in flattening order (sorted dict keys), the order ``input_names`` gives names in."""
    pad, inner = "    " * depth, "    " * (depth + 1)
    if isinstance(node, Leaf):
        return leaf_fn(node)
    if isinstance(node, dict):
        body = "".join(f"{inner}{k!r}: {_render(node[k], leaf_fn, depth + 1)},\n" for k in sorted(node))
        return "{\n" + body + pad + "}"
    items = "".join(f"{inner}{_render(v, leaf_fn, depth + 1)},\n" for v in node)
    return ("(\n" + items + pad + ")") if isinstance(node, tuple) else ("[\n" + items + pad + "]")

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

    kinds = _namedtuples(spec.structure)
    defined = "".join(
        f"{name} = collections.namedtuple({kind[0]!r}, {list(kind[1])!r}, rename=True)\n"  # fields such as _0
        for kind, name in kinds.items()
    )
    return (
        ("import collections\n\n" if kinds else "")
        + "import keras\n"
        "import tensorflow as tf\n\n"
        + (defined + "\n" if kinds else "")
        + f"output_signature = {_render(lists_as_tuples(spec.structure), _type_spec, 0, kinds)}\n\n"
        f"inputs = {_render(features, keras_input, 0, kinds)}\n"
    )


def _namedtuples(node: Any, found: dict[tuple[str, tuple[str, ...]], str] | None = None) -> dict[Any, str]:
    """Each namedtuple type of the structure, (type name, fields), and the name the code gives it (its own,
    made an identifier, numbered when two types share one)."""
    found = {} if found is None else found
    if isinstance(node, Leaf):
        return found
    children = [node[k] for k in sorted(node)] if isinstance(node, dict) else list(node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        kind = (type(node).__name__, tuple(node._fields))
        if kind not in found:
            base = "".join(c if c.isalnum() or c == "_" else "_" for c in kind[0]) or "Fields"
            base = base if base[0].isalpha() or base[0] == "_" else f"_{base}"
            name, k = base, 1
            while name in found.values() or name in ("keras", "tf", "collections", "inputs", "output_signature"):
                k += 1
                name = f"{base}_{k}"
            found[kind] = name
    for child in children:
        _namedtuples(child, found)
    return found


def _type_spec(leaf: Leaf) -> str:
    dtype = f"tf.{leaf.dtype}"
    if leaf.kind == "ragged":
        return f"tf.RaggedTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype}, ragged_rank={leaf.ragged_rank})"
    if leaf.kind == "sparse":
        return f"tf.SparseTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"
    return f"tf.TensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"


def _render(node: Any, leaf_fn: Callable[[Leaf], str], depth: int, kinds: dict[Any, str]) -> str:
    """Leaves are rendered in flattening order (sorted dict keys), the order ``input_names`` gives names in; a
    namedtuple by the name ``kinds`` gives its type, with its fields by keyword."""
    pad, inner = "    " * depth, "    " * (depth + 1)
    if isinstance(node, Leaf):
        return leaf_fn(node)
    if isinstance(node, dict):
        body = "".join(f"{inner}{k!r}: {_render(node[k], leaf_fn, depth + 1, kinds)},\n" for k in sorted(node))
        return "{\n" + body + pad + "}"
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        name = kinds[(type(node).__name__, tuple(node._fields))]
        fields = zip(node._fields, node, strict=True)
        body = "".join(f"{inner}{f}={_render(v, leaf_fn, depth + 1, kinds)},\n" for f, v in fields)
        return f"{name}(\n" + body + pad + ")"
    items = "".join(f"{inner}{_render(v, leaf_fn, depth + 1, kinds)},\n" for v in node)
    return ("(\n" + items + pad + ")") if isinstance(node, tuple) else ("[\n" + items + pad + "]")

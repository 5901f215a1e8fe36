"""Spec: the structure, shapes and dtypes of a source's elements.

A spec is a nest (tuple / list / dict) of :class:`Leaf` — frozen dataclasses that need no TensorFlow — plus
``batched``. ``spec.signature`` turns it into ``tf.TensorSpec`` / ``tf.RaggedTensorSpec`` /
``tf.SparseTensorSpec`` for ``output_signature``. Specs are inferred from sample elements by
:func:`infer_from_samples`: dimensions that differ become None; structure, rank or dtype that differ raise
:class:`SpecInferenceError` naming the field and both samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

from tfbridge import _nest
from tfbridge._values import STRING, ValueProblem, describe
from tfbridge.errors import SpecInferenceError, TfBridgeError, short

Kind = Literal["dense", "ragged", "sparse"]
CastFloats = Literal["floatx"] | str | None

_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "bfloat16", "float32", "float64", "complex64", "complex128", "string"]
)
_JSON_KIND = {"dense": "tensor", "ragged": "ragged", "sparse": "sparse"}
_KIND_OF_JSON = {v: k for k, v in _JSON_KIND.items()}


@dataclass(frozen=True)
class Leaf:
    """One tensor of an element: shape (None where it varies), dtype name, kind, ragged_rank."""

    shape: tuple[int | None, ...]
    dtype: str
    kind: Kind = "dense"
    ragged_rank: int = 0

    @property
    def rank(self) -> int:
        return len(self.shape)

    def type_spec(self) -> Any:
        import tensorflow as tf

        dtype = tf.as_dtype(self.dtype)
        if self.kind == "ragged":
            return tf.RaggedTensorSpec(
                shape=self.shape, dtype=dtype, ragged_rank=self.ragged_rank, row_splits_dtype=tf.int64
            )
        if self.kind == "sparse":
            return tf.SparseTensorSpec(shape=self.shape, dtype=dtype)
        return tf.TensorSpec(shape=self.shape, dtype=dtype)

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        dims = f"({dims},)" if len(self.shape) == 1 else f"({dims})"
        extra = "" if self.kind == "dense" else f" {self.kind}"
        return f"{self.dtype}{dims}{extra}"


class Spec:
    """Structure, shapes and dtypes of a source's elements; see ``tb.infer_spec``."""

    def __init__(self, structure: Any, batched: bool) -> None:
        leaves = _nest.flatten(structure)[0]
        bad = [leaf for leaf in leaves if not isinstance(leaf, Leaf)]
        if bad or not leaves:
            msg = f"a Spec is built from a nest of tfbridge Leaf objects. Received: {short(structure)}"
            raise TfBridgeError(msg)
        _check_dict_keys(structure, structure, ())
        self.structure = structure
        self.batched = bool(batched)
        self.samples: dict[str, list[tuple[int, tuple[int | None, ...]]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("signature", None)  # TensorFlow objects stay out of pickles (workers need no TensorFlow)
        return state

    # -- TensorFlow views -------------------------------------------------------------------------
    @cached_property
    def signature(self) -> Any:
        """Nest of tf.TypeSpec, usable as ``output_signature`` (a list of fields is a tuple there: tf.data
        would take a list for one tensor)."""
        return _nest.map_structure(Leaf.type_spec, lists_as_tuples(self.structure))

    @property
    def features(self) -> Any:
        return _nest.keras_split(self.signature)[0]

    @property
    def labels(self) -> Any:
        return _nest.keras_split(self.signature)[1]

    @property
    def sample_weights(self) -> Any:
        return _nest.keras_split(self.signature)[2]

    @classmethod
    def from_signature(cls, signature: Any, batched: bool | None = None) -> Spec:
        """A Spec from a nest of tf.TypeSpec (e.g. a hand-written ``output_signature``).

        ``batched=None`` takes the signature as batched when every leaf has a leading None dimension.
        """
        import tensorflow as tf

        def leaf(ts: Any) -> Leaf:
            shape = tuple(ts.shape.as_list()) if ts.shape.rank is not None else None
            if shape is None:
                msg = f"{ts} has unknown rank; a spec needs the rank of every field"
                raise TfBridgeError(msg)
            if isinstance(ts, tf.RaggedTensorSpec):
                return Leaf(shape, ts.dtype.name, "ragged", ts.ragged_rank)
            if isinstance(ts, tf.SparseTensorSpec):
                return Leaf(shape, ts.dtype.name, "sparse")
            if isinstance(ts, tf.TensorSpec):
                return Leaf(shape, ts.dtype.name)
            msg = f"cannot take {type(ts).__name__} as a spec leaf. Received: {short(ts)}"
            raise TfBridgeError(msg)

        structure = _nest.map_structure(leaf, _nest.normalize(signature))
        if batched is None:
            batched = all(lf.rank >= 1 and lf.shape[0] is None for lf in _nest.flatten(structure)[0])
        return cls(structure, batched)

    # -- iteration, equality, printing --------------------------------------------------------------
    def fields(self) -> Iterator[tuple[str, Leaf]]:
        """(field path, Leaf) for every tensor, in flattening order."""
        paths, leaves, _ = _nest.flatten_with_paths(self.structure)
        for path, leaf in zip(paths, leaves):
            yield _nest.format_path(path, self.structure), leaf

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spec):
            return NotImplemented
        return self.batched == other.batched and _same(self.structure, other.structure)

    def __hash__(self) -> int:
        return hash((self.batched, json.dumps(_to_json_nest(self.structure), sort_keys=True)))

    def __repr__(self) -> str:
        lines = [f"  {path}: {leaf.describe()}" for path, leaf in self.fields()]
        return f"Spec(batched={self.batched},\n" + "\n".join(lines) + "\n)"

    # -- JSON ---------------------------------------------------------------------------------------
    def to_json(self, indent: int | None = None) -> str:
        """Plain JSON: ``{"batched": ..., "signature": ...}``."""
        return json.dumps({"batched": self.batched, "signature": _to_json_nest(self.structure)}, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        """Rebuild a Spec from :meth:`to_json` output. Only reads data; never executes anything."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            msg = f"Spec.from_json: not valid JSON ({exc}). Received: {short(text)}"
            raise TfBridgeError(msg) from None
        if not isinstance(data, dict) or set(data) != {"batched", "signature"}:
            msg = (
                'Spec.from_json: expected an object with exactly the keys "batched" and "signature". '
                f"Received: {short(data)}"
            )
            raise TfBridgeError(msg)
        if not isinstance(data["batched"], bool):
            msg = f'Spec.from_json: "batched" must be true or false. Received: {short(data["batched"])}'
            raise TfBridgeError(msg)
        structure = _from_json_nest(data["signature"], "signature", 0)
        try:
            return cls(structure, data["batched"])
        except TfBridgeError as exc:
            msg = f"Spec.from_json: {exc}"
            raise TfBridgeError(msg) from None

    # -- code generation ----------------------------------------------------------------------------
    def code(self) -> str:
        """Self-contained Python source defining ``output_signature`` and ``inputs`` (keras.Input nest)."""
        features = _nest.keras_split(self.structure)[0]
        return (
            "import keras\n"
            "import tensorflow as tf\n\n"
            f"output_signature = {_render(lists_as_tuples(self.structure), _render_type_spec, 0)}\n\n"
            f"inputs = {_render(features, self._render_input, 0, names=True)}\n"
        )

    def _render_input(self, leaf: Leaf, name: str | None) -> str:
        shape = leaf.shape[1:] if self.batched else leaf.shape
        args = [f"shape={format_shape(shape)}", f'dtype="{leaf.dtype}"']
        if leaf.kind == "ragged":
            args.append("ragged=True")
        if leaf.kind == "sparse":
            args.append("sparse=True")
        if name is not None:
            args.append(f"name={name.replace('/', '_')!r}")  # Keras refuses "/" in names ("image/encoded")
        return f"keras.Input({', '.join(args)})"


# ---- inference from samples ------------------------------------------------------------------------


def infer_from_samples(samples: Sequence[tuple[int, Any]], batched: bool) -> Spec:
    """Merge the specs of sample elements ``[(index, element), ...]`` into one Spec."""
    builder = SpecBuilder(batched)
    for index, element in samples:
        builder.add(index, element)
    return builder.spec()


class SpecBuilder:
    """Merges elements one at a time into a spec; shared by the peek and by full scans.

    ``samples`` keeps every element's shapes per field (for a peek); ``changes`` keeps, per field and
    dimension, the first size seen and the first element where another size appeared (for a full scan).
    """

    def __init__(self, batched: bool, keep_shapes: bool = True) -> None:
        self.batched, self.keep_shapes = batched, keep_shapes
        self.first: Any = None
        self.first_index = 0
        self.paths: list[str] = []
        self.merged: list[Leaf] = []
        self.described_by: list[int] = []
        self.seen: list[list[tuple[int, tuple[int | None, ...]]]] = []
        self.changes: dict[str, dict[int, tuple[int, int | None, int, int | None]]] = {}
        self._first_shapes: list[tuple[int | None, ...]] = []
        self.ranges: dict[str, list[list[int]]] = {}  # per field and dimension: [smallest, largest] size
        self.count = 0

    def add(self, index: int, element: Any) -> list[Any]:
        """Merge one element; returns its leaf values in field order."""
        element = _nest.normalize(element)
        leaves, treespec = _nest.flatten(element)
        if self.first is None:
            if not leaves:
                msg = (
                    f"element {index} at x: holds no tensor, only empty tuples, lists or dicts. "
                    f"Received: {short(element)}\n"
                    "Hint: an element needs at least one array, tensor, number or string."
                )
                raise SpecInferenceError(msg, path="x")
            self.first, self.first_index, self.treespec = element, index, treespec
            raw_paths = _nest.flatten_with_paths(element)[0]
            self.paths = [_nest.format_path(p, element) for p in raw_paths]
            self.seen = [[] for _ in self.paths]
        elif treespec != self.treespec:
            where, a, b = _nest.structure_difference(self.first, element) or ((), "?", "?")
            path = _nest.format_path(where, self.first)
            msg = (
                f"samples disagree in structure at {path}: element {self.first_index} has {a}, "
                f"element {index} has {b}.\n"
                "Hint: every element of a source must have the same nesting of tuples, lists and dict keys."
            )
            raise SpecInferenceError(msg, path=path)
        batch_sizes: dict[str, int | None] = {}
        for k, value in enumerate(leaves):
            path = self.paths[k]
            leaf = _leaf_of(value, path, index, self.batched)
            if self.batched:
                batch_sizes[path] = leaf.shape[0]
            if self.keep_shapes:
                self.seen[k].append((index, leaf.shape))
            if k >= len(self.merged):
                self.merged.append(leaf)
                self.described_by.append(index)
                self._first_shapes.append(leaf.shape)
            else:
                self._note_change(path, k, index, leaf.shape)
                self.merged[k] = _merge(self.merged[k], leaf, path, self.described_by[k], index)
        _check_batch_sizes(batch_sizes, index)
        self.count += 1
        return leaves

    def _note_change(self, path: str, k: int, index: int, shape: tuple[int | None, ...]) -> None:
        ranges = self.ranges.setdefault(path, [[n, n] for n in self._first_shapes[k]])
        for d, n in enumerate(shape):
            if n is not None and d < len(ranges) and ranges[d][0] is not None:
                ranges[d][0], ranges[d][1] = min(ranges[d][0], n), max(ranges[d][1], n)
        first = self._first_shapes[k]
        for d, (a, b) in enumerate(zip(first, shape)):
            if a != b and d not in self.changes.get(path, {}):
                self.changes.setdefault(path, {})[d] = (self.described_by[k], a, index, b)

    def spec(self) -> Spec:
        if self.first is None:
            msg = "the source is empty: there is no element to infer a spec from.\nHint: check the source yields data."
            raise SpecInferenceError(msg)
        final = [_finish(leaf, self.batched) for leaf in self.merged]
        spec = Spec(_nest.unflatten(self.treespec, final), self.batched)
        if self.keep_shapes:
            spec.samples = dict(zip(self.paths, self.seen))
        return spec


def _finish(leaf: Leaf, batched: bool) -> Leaf:
    """Batch axis None for batched sources; float32 for a field only ever seen empty."""
    shape = (None,) + leaf.shape[1:] if batched else leaf.shape
    return replace(leaf, shape=shape, dtype=leaf.dtype or "float32")


def _leaf_of(value: Any, path: str, index: int, batched: bool) -> Leaf:
    try:
        d = describe(value)
    except ValueProblem as exc:
        msg = (
            f"element {index} at {path}: {exc}. Received: {short(value)}\n"
            "Hint: fields must be numpy arrays, tensors, Python numbers/strings or (nested) lists of them."
        )
        raise SpecInferenceError(msg, path=path) from None
    if batched and not d.shape:
        msg = (
            f"element {index} at {path}: a batched source needs a batch axis on every field, "
            f"but this field is a scalar. Received: {short(value)}\n"
            "Hint: pass batched=False if each element is a single example."
        )
        raise SpecInferenceError(msg, path=path)
    return Leaf(d.shape, d.dtype or "", d.kind, d.ragged_rank)


def _check_batch_sizes(batch_sizes: dict[str, int | None], index: int) -> None:
    known = {p: n for p, n in batch_sizes.items() if n is not None}
    if len(set(known.values())) > 1:
        listing = ", ".join(f"{p}: {n}" for p, n in known.items())
        msg = (
            f"element {index}: the fields of one batch have different batch sizes ({listing}).\n"
            "Hint: every field of a batch needs the same leading dimension; "
            "pass batched=False if elements are single examples."
        )
        raise SpecInferenceError(msg)


def _merge(a: Leaf, b: Leaf, path: str, ia: int, ib: int) -> Leaf:
    kinds = {a.kind, b.kind}
    if "sparse" in kinds and len(kinds) > 1:
        msg = (
            f"samples disagree at {path}: element {ia} is {a.kind}, element {ib} is {b.kind}.\n"
            "Hint: a field must be sparse in every element or in none."
        )
        raise SpecInferenceError(msg, path=path)
    if a.rank != b.rank:
        msg = (
            f"samples disagree in rank at {path}: element {ia} has shape {format_shape(a.shape)} (rank {a.rank}), "
            f"element {ib} has shape {format_shape(b.shape)} (rank {b.rank}).\n"
            "Hint: a field must have the same number of dimensions in every element "
            "(e.g. add the channel axis to grayscale images)."
        )
        raise SpecInferenceError(msg, path=path)
    dtype = a.dtype or b.dtype
    if a.dtype and b.dtype and a.dtype != b.dtype:
        msg = (
            f"samples disagree in dtype at {path}: element {ia} is {a.dtype}, element {ib} is {b.dtype}.\n"
            "Hint: make the source yield one dtype for this field (e.g. .astype(np.float32)), "
            "or pass spec= to convert every element to the dtypes you want."
        )
        raise SpecInferenceError(msg, path=path)
    shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape))
    kind: Kind = "ragged" if "ragged" in kinds else a.kind
    return Leaf(shape, dtype, kind, max(a.ragged_rank, b.ragged_rank))


# ---- transformations used by the pipeline and keras_inputs --------------------------------------------


def float_target(cast_floats: CastFloats) -> str | None:
    """The dtype float64 fields become under ``cast_floats`` (None: keep float64)."""
    if cast_floats is None:
        return None
    if cast_floats == "floatx":
        import keras

        return keras.config.floatx()
    if cast_floats in ("float16", "bfloat16", "float32", "float64"):
        return cast_floats
    msg = (
        f'cast_floats must be "floatx", None or a float dtype name. Received: {short(cast_floats)}\n'
        'Hint: cast_floats="floatx" follows keras.config.floatx(); None keeps float64.'
    )
    raise TfBridgeError(msg)


def apply_float_policy(spec: Spec, cast_floats: CastFloats) -> Spec:
    """float64 fields become the ``cast_floats`` dtype; everything else stays."""
    target = float_target(cast_floats)
    if target is None or target == "float64":
        return spec

    def cast(leaf: Leaf) -> Leaf:
        return replace(leaf, dtype=target) if leaf.dtype == "float64" else leaf

    out = Spec(_nest.map_structure(cast, spec.structure), spec.batched)
    out.samples = spec.samples
    return out


def add_batch_axis(spec: Spec) -> Spec:
    """The spec of batches of ``spec``'s elements (leading None axis; ragged_rank grows with it)."""

    def batch(leaf: Leaf) -> Leaf:
        rr = leaf.ragged_rank + 1 if leaf.kind == "ragged" else 0
        return Leaf((None,) + leaf.shape, leaf.dtype, leaf.kind, rr)

    return Spec(_nest.map_structure(batch, spec.structure), True)


# ---- helpers ---------------------------------------------------------------------------------------


def _check_dict_keys(node: Any, root: Any, path: tuple[Any, ...]) -> None:
    """TensorFlow orders dict fields by sorting their keys: keys that do not sort (1 and "a") are refused."""
    if isinstance(node, dict):
        try:
            sorted(node)
        except TypeError:
            where = _nest.format_path(path, root)
            kinds = sorted({type(k).__name__ for k in node})
            msg = (
                f"the dict at {where} has keys of types that do not sort ({', '.join(kinds)}): "
                f"TensorFlow orders dict fields by sorting their keys. Received keys: {short(list(node))}\n"
                "Hint: give the dict keys of one type (strings, which also name Keras inputs)."
            )
            raise SpecInferenceError(msg, path=where)
        items: Any = node.items()
    elif isinstance(node, (tuple, list)):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        _check_dict_keys(value, root, path + (key,))


def lists_as_tuples(structure: Any) -> Any:
    """``structure`` with every list of fields made a tuple, the form tf.data delivers them in."""
    if isinstance(structure, dict):
        return {k: lists_as_tuples(v) for k, v in structure.items()}
    if isinstance(structure, list):
        return tuple(lists_as_tuples(v) for v in structure)
    if isinstance(structure, tuple):
        items = [lists_as_tuples(v) for v in structure]
        return type(structure)(*items) if hasattr(structure, "_fields") else tuple(items)
    return structure


def _same(a: Any, b: Any) -> bool:
    la, sa = _nest.flatten(a)
    lb, sb = _nest.flatten(b)
    return sa == sb and la == lb


def format_shape(shape: Sequence[int | None]) -> str:
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _to_json_nest(node: Any) -> Any:
    if isinstance(node, Leaf):
        out: dict[str, Any] = {"type": _JSON_KIND[node.kind], "shape": list(node.shape), "dtype": node.dtype}
        if node.kind == "ragged":
            out["ragged_rank"] = node.ragged_rank
        return out
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):
                msg = f"Spec.to_json: dict keys must be strings for JSON. Received key {short(key)}"
                raise TfBridgeError(msg)
        return {"type": "dict", "items": {k: _to_json_nest(v) for k, v in node.items()}}
    if isinstance(node, tuple):
        return {"type": "tuple", "items": [_to_json_nest(v) for v in node]}
    return {"type": "list", "items": [_to_json_nest(v) for v in node]}


_MAX_JSON_DEPTH = 64
_MAX_DIM = 2**63 - 1  # TensorFlow's dimensions are int64


def _from_json_nest(node: Any, where: str, depth: int) -> Any:
    def bad(what: str) -> TfBridgeError:
        return TfBridgeError(f"Spec.from_json: {where}: {what}. Received: {short(node)}")

    if depth > _MAX_JSON_DEPTH:
        raise bad(f"nesting deeper than {_MAX_JSON_DEPTH}")
    if not isinstance(node, dict) or "type" not in node:
        raise bad('expected an object with a "type"')
    kind = node["type"]
    if not isinstance(kind, str):
        raise bad('"type" must be a string: one of tensor, ragged, sparse, tuple, list, dict')
    if kind in ("tuple", "list"):
        items = node.get("items")
        if not isinstance(items, list) or set(node) != {"type", "items"}:
            raise bad(f'a {kind} needs exactly "type" and "items" (a list)')
        values = [_from_json_nest(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
        return tuple(values) if kind == "tuple" else values
    if kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict) or set(node) != {"type", "items"}:
            raise bad('a dict needs exactly "type" and "items" (an object)')
        return {k: _from_json_nest(v, f"{where}[{k!r}]", depth + 1) for k, v in items.items()}
    if kind not in _KIND_OF_JSON:
        raise bad('"type" must be one of tensor, ragged, sparse, tuple, list, dict')
    allowed = {"type", "shape", "dtype"} | ({"ragged_rank"} if kind == "ragged" else set())
    if not set(node) <= allowed or not {"shape", "dtype"} <= set(node):
        raise bad(f"a {kind} needs the keys {sorted(allowed)}")
    shape = node["shape"]
    if not isinstance(shape, list) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM) for d in shape
    ):
        raise bad('"shape" must be a list of non-negative integers below 2**63 (int64) or null')
    if not isinstance(node["dtype"], str) or node["dtype"] not in _DTYPES:
        raise bad(f'"dtype" must be one of {sorted(_DTYPES)}')
    ragged_rank = node.get("ragged_rank", 0)
    if kind == "ragged" and not (
        isinstance(ragged_rank, int) and not isinstance(ragged_rank, bool) and 1 <= ragged_rank < max(len(shape), 1)
    ):
        raise bad('"ragged_rank" must be an integer from 1 to rank - 1')
    return Leaf(tuple(shape), node["dtype"], _KIND_OF_JSON[kind], ragged_rank)


def _render_type_spec(leaf: Leaf, name: str | None) -> str:
    dtype = f"tf.{leaf.dtype}"
    if leaf.kind == "ragged":
        return f"tf.RaggedTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype}, ragged_rank={leaf.ragged_rank})"
    if leaf.kind == "sparse":
        return f"tf.SparseTensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"
    return f"tf.TensorSpec(shape={format_shape(leaf.shape)}, dtype={dtype})"


def _render(node: Any, leaf_fn: Any, depth: int, names: bool = False, key: str | None = None) -> str:
    pad, inner = "    " * depth, "    " * (depth + 1)
    if isinstance(node, Leaf):
        return leaf_fn(node, key if names else None)
    if isinstance(node, dict):
        body = "".join(
            f"{inner}{k!r}: {_render(v, leaf_fn, depth + 1, names, _join(key, k))},\n" for k, v in node.items()
        )
        return "{\n" + body + pad + "}"
    items = "".join(f"{inner}{_render(v, leaf_fn, depth + 1, names, key)},\n" for v in node)
    return ("(\n" + items + pad + ")") if isinstance(node, tuple) else ("[\n" + items + pad + "]")


def _join(prefix: str | None, key: Any) -> str:
    return str(key) if prefix is None else f"{prefix}_{key}"


__all__ = ["STRING", "Leaf", "Spec", "SpecBuilder", "add_batch_axis", "apply_float_policy", "float_target", "format_shape", "infer_from_samples"]

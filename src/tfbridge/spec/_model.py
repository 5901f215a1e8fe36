"""The Spec value: the structure, shapes and dtypes of a source's elements, and the rules every view of it
shares (the float policy, the batch axis, field paths, Keras input names, shape text).

A spec is a nest (tuple / list / dict) of :class:`Leaf` (frozen dataclasses that need no TensorFlow) plus
``batched``. ``spec.signature`` turns it into ``tf.TensorSpec`` / ``tf.RaggedTensorSpec`` /
``tf.SparseTensorSpec`` for ``output_signature``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tfbridge import _nest
from tfbridge._checks import short
from tfbridge.errors import SpecInferenceError, TfBridgeError

Kind = Literal["dense", "ragged", "sparse"]
CastFloats = str | None  # "floatx" (keras.config.floatx()), a float dtype name, or None (keep float64)
_FLOAT_TARGETS = ("float16", "bfloat16", "float32", "float64")


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
        from tfbridge._tf import tf as tensorflow

        tf = tensorflow()
        dtype = tf.as_dtype(self.dtype)
        if self.kind == "ragged":
            return tf.RaggedTensorSpec(
                shape=self.shape, dtype=dtype, ragged_rank=self.ragged_rank, row_splits_dtype=tf.int64
            )
        if self.kind == "sparse":
            return tf.SparseTensorSpec(shape=self.shape, dtype=dtype)
        return tf.TensorSpec(shape=self.shape, dtype=dtype)

    def describe(self) -> str:
        extra = "" if self.kind == "dense" else f" {self.kind}"
        return f"{self.dtype}{format_shape(self.shape)}{extra}"


@dataclass(frozen=True, eq=False)
class Spec:
    """Structure, shapes and dtypes of a source's elements (see ``tb.infer_spec``). Immutable: the transforms
    (float policy, batch axis) return new specs."""

    structure: Any
    batched: bool
    _signature: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        leaves = _nest.flatten(self.structure)[0]
        bad = [leaf for leaf in leaves if not isinstance(leaf, Leaf)]
        if bad or not leaves:
            msg = f"a Spec is built from a nest of tfbridge Leaf objects. Received: {short(self.structure)}"
            raise TfBridgeError(msg)
        check_dict_keys(self.structure, self.structure, ())
        # a private copy of the nest: changing the dict or list it was built from changes nothing here
        object.__setattr__(self, "structure", _nest.map_structure(lambda leaf: leaf, self.structure))
        object.__setattr__(self, "batched", bool(self.batched))

    def __getstate__(self) -> dict[str, Any]:
        # TensorFlow objects stay out of pickles (workers need no TensorFlow)
        return {"structure": self.structure, "batched": self.batched}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "structure", state["structure"])
        object.__setattr__(self, "batched", state["batched"])
        object.__setattr__(self, "_signature", None)

    # -- TensorFlow views -------------------------------------------------------------------------
    @property
    def signature(self) -> Any:
        """Nest of tf.TypeSpec, usable as ``output_signature`` (a list of fields is a tuple there: tf.data
        would take a list for one tensor)."""
        if self._signature is None:
            object.__setattr__(self, "_signature", _nest.map_structure(Leaf.type_spec, lists_as_tuples(self.structure)))
        return self._signature

    @property
    def features(self) -> Any:
        """The ``x`` of Keras's (x, y, sample_weight) split, as TypeSpecs."""
        return _nest.keras_split(self.signature)[0]

    @property
    def labels(self) -> Any:
        """The ``y`` of Keras's split, or None."""
        return _nest.keras_split(self.signature)[1]

    @property
    def sample_weights(self) -> Any:
        """The ``sample_weight`` of Keras's split, or None."""
        return _nest.keras_split(self.signature)[2]

    @classmethod
    def from_signature(cls, signature: Any, batched: bool | None = None) -> Spec:
        """A Spec from a nest of tf.TypeSpec (e.g. a hand-written ``output_signature``).

        ``batched=None`` takes the signature as batched when every leaf has a leading None dimension.
        """
        import tensorflow as tf

        def leaf(ts: Any) -> Leaf:
            if not isinstance(ts, (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)):
                msg = (
                    f"cannot take {type(ts).__name__} as a spec leaf: every leaf of a signature is a tf.TensorSpec, "
                    f"tf.RaggedTensorSpec or tf.SparseTensorSpec. Received: {short(ts)}\nHint: to read a spec "
                    "from data, use tb.infer_spec(data)."
                )
                raise TfBridgeError(msg)
            shape = tuple(ts.shape.as_list()) if ts.shape.rank is not None else None
            if shape is None:
                msg = f"{ts} has unknown rank; a spec needs the rank of every field"
                raise TfBridgeError(msg)
            if isinstance(ts, tf.RaggedTensorSpec):
                return Leaf(shape, ts.dtype.name, "ragged", ts.ragged_rank)
            if isinstance(ts, tf.SparseTensorSpec):
                return Leaf(shape, ts.dtype.name, "sparse")
            return Leaf(shape, ts.dtype.name)

        structure = _nest.map_structure(leaf, _nest.normalize(signature))
        if batched is None:
            batched = all(lf.rank >= 1 and lf.shape[0] is None for lf in _nest.flatten(structure)[0])
        return cls(structure, batched)

    # -- iteration, equality, printing --------------------------------------------------------------
    def fields(self) -> Iterator[tuple[str, Leaf]]:
        """(field path, Leaf) for every tensor, in flattening order."""
        paths, leaves, _ = _nest.flatten_with_paths(self.structure)
        for path, leaf in zip(paths, leaves, strict=False):
            yield _nest.format_path(path, self.structure), leaf

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spec):
            return NotImplemented
        return self.batched == other.batched and _key(self.structure) == _key(other.structure)

    def __hash__(self) -> int:
        return hash((self.batched, _key(self.structure)))

    def __repr__(self) -> str:
        lines = [f"  {path}: {leaf.describe()}" for path, leaf in self.fields()]
        return f"Spec(batched={self.batched},\n" + "\n".join(lines) + "\n)"

    # -- JSON and code ------------------------------------------------------------------------------
    def to_json(self, indent: int | None = None) -> str:
        """Plain JSON: ``{"batched": ..., "signature": ...}``."""
        from tfbridge.spec._json import to_json_nest

        return json.dumps({"batched": self.batched, "signature": to_json_nest(self.structure)}, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        """Rebuild a Spec from :meth:`to_json` output. Only reads data; never executes anything."""
        from tfbridge.spec._json import spec_from_json

        return spec_from_json(text)

    def code(self, cast_floats: CastFloats = "floatx") -> str:
        """Self-contained Python source defining ``output_signature`` and ``inputs`` (the keras.Input nest).

        The float policy and the input names are those of ``to_dataset`` and ``keras_inputs``:
        ``cast_floats="floatx"`` (the default) writes float64 fields as ``keras.config.floatx()``.
        """
        from tfbridge.spec._code import render_code

        return render_code(apply_float_policy(self, cast_floats))


def _key(node: Any) -> Any:
    """A hashable value that is equal for equal structures: dicts by their (sortable) keys, whatever their
    order; a namedtuple by its type's name and fields (so one rebuilt from JSON equals the original)."""
    if isinstance(node, Leaf):
        return node
    if isinstance(node, dict):
        return ("dict", tuple((k, _key(node[k])) for k in sorted(node)))
    items = tuple(_key(v) for v in node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return ("namedtuple", type(node).__name__, tuple(node._fields), items)
    return ("tuple" if isinstance(node, tuple) else "list", items)


# ---- transformations ----------------------------------------------------------------------------------


def float_target(cast_floats: CastFloats) -> str | None:
    """The dtype float64 fields become under ``cast_floats`` (None: keep float64)."""
    if cast_floats is None:
        return None
    if cast_floats == "floatx":
        import keras

        return str(keras.config.floatx())
    if cast_floats in _FLOAT_TARGETS:
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

    return Spec(_nest.map_structure(cast, spec.structure), spec.batched)


def add_batch_axis(spec: Spec) -> Spec:
    """The spec of batches of ``spec``'s elements (leading None axis; ragged_rank grows with it)."""

    def batch(leaf: Leaf) -> Leaf:
        rr = leaf.ragged_rank + 1 if leaf.kind == "ragged" else 0
        return Leaf((None, *leaf.shape), leaf.dtype, leaf.kind, rr)

    return Spec(_nest.map_structure(batch, spec.structure), True)


def input_names(features: Any) -> list[str | None]:
    """The Keras input name of every feature field, in flattening order: the dict keys on its path joined with
    "_" ("/" becomes "_": Keras refuses it, and TFRecord keys such as "image/encoded" are common); None for a
    field reached through no dict key. Fields under one key in a tuple or list add their positions ("a_0",
    "a_1"). Two fields with one name are an error naming both."""
    paths, _, _ = _nest.flatten_with_paths(features)

    def joined(path: tuple[Any, ...], positions: bool) -> str | None:
        """The keys on ``path``; with ``positions``, the tuple positions after its first key too (a tuple or list
        of several fields under one key: "a_0", "a_1")."""
        first = next((k for k, key in enumerate(path) if isinstance(key, str)), None)
        if first is None:
            return None
        kept = [str(key) for k, key in enumerate(path) if isinstance(key, str) or (positions and k > first)]
        return "_".join(kept).replace("/", "_")

    base = [joined(path, False) for path in paths]
    shared = {name for name in base if name is not None and base.count(name) > 1}
    names: list[str | None] = []
    seen: dict[str, Any] = {}
    for path, plain in zip(paths, base, strict=True):
        name = joined(path, True) if plain in shared else plain
        if name is not None:
            if name in seen:
                first = _nest.format_path(seen[name], features)
                msg = (
                    f"two feature fields would both be named {name!r} as Keras inputs: {first} and "
                    f"{_nest.format_path(path, features)}.\n"
                    "Hint: rename one of the keys (Keras input names join nested keys with '_')."
                )
                raise TfBridgeError(msg)
            seen[name] = path
        names.append(name)
    return names


def check_dict_keys(node: Any, root: Any, path: tuple[Any, ...]) -> None:
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
            raise SpecInferenceError(msg, path=where) from None
        items: Any = node.items()
    elif isinstance(node, (tuple, list)):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        check_dict_keys(value, root, (*path, key))


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


def format_shape(shape: Sequence[int | None]) -> str:
    """``(None, 3)``, ``(5,)``, ``()``: the one way tfbridge writes a shape (messages, report, code)."""
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"

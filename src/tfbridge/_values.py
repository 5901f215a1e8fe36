"""Leaf values: what kind of tensor a Python/numpy/TensorFlow value is, and its shape and dtype.

Everything here is numpy-only unless the value itself is a TensorFlow or torch object.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

Kind = Literal["dense", "ragged", "sparse"]
STRING = "string"


class ValueProblem(Exception):
    """A leaf value tfbridge cannot turn into a tensor; the caller adds index and field path."""


@dataclass(frozen=True)
class Described:
    """A leaf value normalised: ``value`` is an ndarray (dense), a nested list / object array or
    tf.RaggedTensor (ragged), or a tf.SparseTensor / scipy sparse matrix (sparse)."""

    value: Any
    kind: Kind
    shape: tuple[int | None, ...]
    dtype: str | None  # None: no element to tell (an empty list)
    ragged_rank: int = 0


@functools.lru_cache(maxsize=256)  # asked once per field of every element; numpy's dtype.name is slow
def dtype_name(dtype: np.dtype) -> str:
    """TensorFlow dtype name for a numpy dtype; text is ``string``."""
    if dtype.kind in "USO":
        return STRING
    if dtype.name in _TF_NUMERIC:
        return str(dtype.name)
    if dtype.name.startswith("float8"):
        msg = (
            f"dtype {dtype} is not supported by tfbridge; convert it in the source to float16, bfloat16 or float32 "
            "(numpy: .astype(np.float32); torch: .to(torch.float16))"
        )
    elif dtype.kind in "fc":  # float128 / complex256 (long double)
        msg = (
            f"dtype {dtype} has no TensorFlow equivalent (TensorFlow's widest float is float64); convert it in "
            "the source, e.g. .astype(np.float64)"
        )
    else:
        msg = f"dtype {dtype} has no TensorFlow equivalent"
    raise ValueProblem(msg)


_TF_NUMERIC = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "bfloat16",
     "float32", "float64", "complex64", "complex128"]
)  # fmt: skip


def _from_module(value: Any, prefix: str) -> bool:
    return type(value).__module__.startswith(prefix)


def _object_array(arr: np.ndarray) -> Described:
    """Object arrays hold strings, or rows of unequal length (ragged), or numbers; anything else is an error."""
    flat = arr.ravel()
    if not flat.size:  # nothing to tell the dtype from, like an empty list
        return Described(arr, "dense", tuple(arr.shape), None)
    if all(isinstance(v, (str, bytes)) for v in flat):
        return Described(arr, "dense", tuple(arr.shape), STRING)
    return _ragged(arr.tolist())


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TEXT = (str, bytes)
_NUMBERS = (bool, int, float, complex, np.bool_, np.number)


def _check_int64(value: int) -> None:
    if not _INT64_MIN <= value <= _INT64_MAX:
        msg = f"a Python int of {value.bit_length()} bits does not fit int64"
        raise ValueProblem(msg)


def _ragged(rows: list[Any]) -> Described:
    """Shape, dtype and ragged_rank of a nested list (or list of arrays), ragged when row lengths differ.

    Every scalar is looked at: text and numbers do not mix, Python ints must fit int64, and anything else
    (None, dicts, objects) is no tensor. Text stays in object arrays (numpy's fixed-width strings would drop
    trailing NUL characters and cannot hold str and non-ASCII bytes together)."""
    dims: list[set[int]] = []
    scalars: list[Any] = []
    arrays: list[np.ndarray] = []
    kinds: set[str] = set()
    depths: set[int] = set()  # where values sit: every scalar (and array cell) at one depth

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, np.ndarray) and node.dtype != object:
            for d, n in enumerate(node.shape):
                while len(dims) <= depth + d:
                    dims.append(set())
                dims[depth + d].add(n)
            depths.add(depth + node.ndim)
            if node.size:
                kinds.add("text" if dtype_name(node.dtype) == STRING else "number")
            arrays.append(node)
            return
        if isinstance(node, (list, tuple, np.ndarray)):
            while len(dims) <= depth:
                dims.append(set())
            dims[depth].add(len(node))
            for child in node:
                walk(child, depth + 1)
            return
        depths.add(depth)
        if isinstance(node, _TEXT):
            kinds.add("text")
        elif isinstance(node, _NUMBERS):
            if isinstance(node, int) and not isinstance(node, bool):
                _check_int64(node)
            kinds.add("number")
        else:
            msg = f"a {type(node).__module__}.{type(node).__qualname__} inside a list or object array is not a tensor"
            raise ValueProblem(msg)
        scalars.append(node)

    walk(rows, 0)
    if depths and depths != {len(dims)}:
        msg = "nested lists of unequal depth are not a tensor"
        raise ValueProblem(msg)
    if len(kinds) > 1:
        msg = "a list mixing strings and numbers is not a tensor"
        raise ValueProblem(msg)
    text = kinds == {"text"}
    dtype: str | None = None
    if text:
        dtype = STRING
    elif kinds:
        parts = [np.asarray(scalars)] if scalars else []
        parts += [a.ravel() for a in arrays if a.size]
        dtype = dtype_name(np.result_type(*[p.dtype for p in parts]))
    shape = tuple(next(iter(s)) if len(s) == 1 else None for s in dims)
    varying = [d for d, n in enumerate(shape) if n is None]
    if not varying:
        dense = _dense_text(rows, shape) if text else np.asarray(rows)
        return Described(dense, "dense", shape, dtype)
    return Described(rows, "ragged", shape, dtype, ragged_rank=max(varying))


def _dense_text(rows: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """An object array of the str/bytes objects in ``rows`` (nested lists and arrays of one shape)."""
    out = np.empty(cast("tuple[int, ...]", shape), dtype=object)  # called only when no size is None
    flat = out.reshape(-1)
    position = 0

    def fill(node: Any) -> None:
        nonlocal position
        if isinstance(node, np.ndarray) and node.dtype != object:
            values = node.ravel().tolist()
            flat[position : position + len(values)] = values
            position += len(values)
        elif isinstance(node, (list, tuple, np.ndarray)):
            for child in node:
                fill(child)
        else:
            flat[position] = node
            position += 1

    fill(rows)
    return out


def describe(value: Any) -> Described:
    """Normalise one leaf value. Raises ValueProblem for values that are no tensor."""
    described = _describe(value)
    if described.dtype == STRING:
        _check_utf8(described.value)
    return described


def _check_utf8(arr: Any) -> None:
    """A tf.string holds UTF-8 bytes: text with a lone surrogate (e.g. a file name decoded with
    errors="surrogateescape") has none, and TensorFlow would fail on it without saying where."""
    try:
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "U":
            np.char.encode(arr, "utf-8")
        elif isinstance(arr, np.ndarray) and arr.dtype == object:
            for v in arr.flat:
                if isinstance(v, str):
                    v.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        msg = (
            f"text holding {bad!r}, which UTF-8 cannot encode ({exc.reason}), so no tf.string can hold it; "
            "fix the text in the source (e.g. text.encode('utf-8', 'surrogateescape') to keep the bytes "
            "as they were, or errors='replace')"
        )
        raise ValueProblem(msg) from None


def _describe(value: Any) -> Described:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return _object_array(value)
        return Described(value, "dense", tuple(value.shape), dtype_name(value.dtype))
    if isinstance(value, bool):
        return Described(np.asarray(value), "dense", (), "bool")
    if isinstance(value, int):
        _check_int64(value)
        return Described(np.asarray(value, dtype=np.int64), "dense", (), "int64")
    if isinstance(value, float):
        return Described(np.asarray(value, dtype=np.float64), "dense", (), "float64")
    if isinstance(value, (str, bytes)):
        return Described(np.asarray(value, dtype=object), "dense", (), STRING)
    if isinstance(value, np.generic):
        arr = np.asarray(value)
        return Described(arr, "dense", (), dtype_name(arr.dtype))
    if isinstance(value, list):
        return _describe_list(value)
    if value is None:
        msg = "None is not a tensor"
        raise ValueProblem(msg)
    if _from_module(value, "tensorflow"):
        return _describe_tf(value)
    if _from_module(value, "torch"):
        return describe(torch_to_numpy(value))
    if _from_module(value, "scipy.sparse"):
        coo = value.tocoo()
        return Described(coo, "sparse", tuple(coo.shape), dtype_name(coo.dtype))
    if _from_module(value, "pandas"):
        return describe(value.to_numpy())
    if array_like(value):
        return describe(np.asarray(value))
    msg = f"a {type(value).__module__}.{type(value).__qualname__} is not a tensor"
    raise ValueProblem(msg)


def array_like(value: Any) -> bool:
    """Whether numpy reads ``value`` as an array through one of its protocols: ``__array__``, or the array
    interface alone (PIL images since Pillow 12 have only ``__array_interface__``)."""
    return any(hasattr(value, name) for name in ("__array__", "__array_interface__", "__array_struct__"))


def _describe_list(value: list[Any]) -> Described:
    if not value:
        return Described(np.zeros((0,), np.float32), "dense", (0,), None)
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError):  # rows of unequal length, or text numpy cannot hold
        return _ragged(value)
    if arr.dtype == object or (arr.dtype.kind in "USuf" and _needs_a_closer_look(arr)):
        return _ragged(value)  # looks at every scalar
    if arr.size == 0:
        return Described(arr, "dense", tuple(arr.shape), None)
    return Described(arr, "dense", tuple(arr.shape), dtype_name(arr.dtype))


def _needs_a_closer_look(arr: np.ndarray) -> bool:
    """Text (numbers mixed in become text; trailing NULs get lost), or unsigned / float values that may come
    from Python ints beyond int64 (numpy makes those uint64 or float64 without a word)."""
    if arr.dtype.kind in "USu":
        return True
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.abs(arr) >= 2.0**63))


def _describe_tf(value: Any) -> Described:
    import tensorflow as tf

    if isinstance(value, tf.RaggedTensor):
        return Described(value, "ragged", tuple(value.shape.as_list()), value.dtype.name, ragged_rank=value.ragged_rank)
    if isinstance(value, tf.SparseTensor):
        return Described(value, "sparse", tuple(value.shape.as_list()), value.dtype.name)
    if isinstance(value, tf.Tensor):
        arr = value.numpy()
        name = STRING if value.dtype == tf.string else value.dtype.name
        return Described(arr, "dense", tuple(value.shape.as_list()), name)
    if isinstance(value, tf.Variable):
        return _describe_tf(tf.convert_to_tensor(value))
    msg = f"a {type(value).__qualname__} is not a tensor"
    raise ValueProblem(msg)


def torch_to_numpy(tensor: Any) -> Any:
    """A numpy array of ``tensor`` with its dtype, or a :class:`NoNumpyTensor` saying why there is none."""
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    try:
        return t.resolve_conj().resolve_neg().numpy()
    except (TypeError, RuntimeError) as exc:  # a dtype or layout numpy has no equivalent of
        name = str(t.dtype).removeprefix("torch.")
        bits = {1: torch.uint8, 2: torch.int16}.get(t.element_size())
        if t.layout == torch.strided and bits is not None:
            import ml_dtypes

            kind = getattr(ml_dtypes, name, None)
            if kind is not None:  # bfloat16, float8_*: the same bits under ml_dtypes' numpy dtype
                return t.view(bits).numpy().view(kind)
        return NoNumpyTensor(t, exc)


class NoNumpyTensor:
    """Stands for a torch tensor numpy cannot hold. Any conversion to an array (``np.asarray``) raises
    ``ValueProblem``, which the spec and the checks report as "element i at path: <why>" with a hint."""

    def __init__(self, tensor: Any, reason: BaseException) -> None:
        self.dtype, self.shape = str(tensor.dtype), tuple(tensor.shape)
        why = str(reason).split("\n")[0]
        if str(tensor.layout) != "torch.strided":
            fix = ".to_dense()"
        else:
            fix = ".to(torch.complex64)" if tensor.dtype.is_complex else ".to(torch.float32)"
        self.text = (
            f"a torch.Tensor of dtype {tensor.dtype} (layout {tensor.layout}) has no numpy equivalent "
            f"({type(reason).__name__}: {why}); convert it in the dataset, e.g. with {fix}"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueProblem(self.text)

    def __repr__(self) -> str:
        return f"torch.Tensor(shape={self.shape}, dtype={self.dtype})"

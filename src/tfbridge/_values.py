"""Leaf values: what kind of tensor a Python/numpy/TensorFlow value is, and its shape and dtype.

Everything here is numpy-only unless the value itself is a TensorFlow or torch object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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


def dtype_name(dtype: np.dtype) -> str:
    """TensorFlow dtype name for a numpy dtype; text is ``string``."""
    if dtype.kind in "USO":
        return STRING
    if dtype.kind in "biufc" or dtype.name == "bfloat16":
        return dtype.name
    msg = f"dtype {dtype} has no TensorFlow equivalent"
    raise ValueProblem(msg)


def _from_module(value: Any, prefix: str) -> bool:
    return type(value).__module__.startswith(prefix)


def _object_array(arr: np.ndarray) -> Described:
    """Object arrays hold strings, or rows of unequal length (ragged), or mixed junk (an error)."""
    flat = arr.ravel()
    if flat.size and all(isinstance(v, (str, bytes)) for v in flat):
        return Described(arr, "dense", tuple(arr.shape), STRING)
    if flat.size and all(isinstance(v, (list, np.ndarray)) for v in flat):
        return _ragged(list(arr))
    if flat.size and all(isinstance(v, (bool, int, float, np.generic)) for v in flat):
        dense = np.asarray(flat.tolist()).reshape(arr.shape)
        return Described(dense, "dense", tuple(dense.shape), dtype_name(dense.dtype))
    kinds = sorted({type(v).__name__ for v in flat[:50]})
    msg = f"an object array mixing {', '.join(kinds) or 'nothing'} is not a tensor"
    raise ValueProblem(msg)


def _ragged(rows: list[Any]) -> Described:
    """Shape, dtype and ragged_rank of a nested list (or list of arrays) whose row lengths differ."""
    dims: list[set[int]] = []
    scalars: list[Any] = []
    arrays: list[np.ndarray] = []

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, np.ndarray) and node.dtype != object:
            for d, n in enumerate(node.shape):
                while len(dims) <= depth + d:
                    dims.append(set())
                dims[depth + d].add(n)
            if len(dims) != depth + node.ndim:
                msg = "nested lists of unequal depth are not a tensor"
                raise ValueProblem(msg)
            arrays.append(node)
            return
        if isinstance(node, (list, tuple, np.ndarray)):
            while len(dims) <= depth:
                dims.append(set())
            dims[depth].add(len(node))
            for child in node:
                walk(child, depth + 1)
            return
        if len(dims) != depth:
            msg = "nested lists of unequal depth are not a tensor"
            raise ValueProblem(msg)
        scalars.append(node)

    walk(rows, 0)
    parts = [np.asarray(scalars)] if scalars else []
    parts += [a.ravel() for a in arrays]
    dtype: str | None = None
    if parts and sum(p.size for p in parts):
        kinds = {dtype_name(p.dtype) for p in parts if p.size}
        if len(kinds) > 1:
            merged = np.result_type(*[p.dtype for p in parts if p.size])
            if STRING in kinds:
                msg = f"a list mixing strings and numbers ({', '.join(sorted(kinds))}) is not a tensor"
                raise ValueProblem(msg)
            dtype = dtype_name(merged)
        else:
            dtype = kinds.pop()
        if dtype == "object":
            msg = "a list of mixed Python objects is not a tensor"
            raise ValueProblem(msg)
    shape = tuple(next(iter(s)) if len(s) == 1 else None for s in dims)
    varying = [d for d, n in enumerate(shape) if n is None]
    if not varying:
        return Described(np.asarray(rows), "dense", shape, dtype)
    return Described(rows, "ragged", shape, dtype, ragged_rank=max(varying))


def describe(value: Any) -> Described:
    """Normalise one leaf value. Raises ValueProblem for values that are no tensor."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return _object_array(value)
        return Described(value, "dense", tuple(value.shape), dtype_name(value.dtype))
    if isinstance(value, bool):
        return Described(np.asarray(value), "dense", (), "bool")
    if isinstance(value, int):
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
        return describe(value.detach().cpu().numpy())
    if _from_module(value, "scipy.sparse"):
        coo = value.tocoo()
        return Described(coo, "sparse", tuple(coo.shape), dtype_name(coo.dtype))
    if _from_module(value, "pandas"):
        return describe(value.to_numpy())
    if hasattr(value, "__array__"):
        return describe(np.asarray(value))
    msg = f"a {type(value).__module__}.{type(value).__qualname__} is not a tensor"
    raise ValueProblem(msg)


def _describe_list(value: list[Any]) -> Described:
    if not value:
        return Described(np.zeros((0,), np.float32), "dense", (0,), None)
    try:
        arr = np.asarray(value)
    except ValueError:
        return _ragged(value)
    if arr.dtype == object:
        return _ragged(value)
    if arr.dtype.kind in "US" and any(not isinstance(v, (str, bytes, list)) for v in value):
        msg = "a list mixing strings and numbers is not a tensor"
        raise ValueProblem(msg)
    if arr.size == 0:
        return Described(arr, "dense", tuple(arr.shape), None)
    return Described(arr, "dense", tuple(arr.shape), dtype_name(arr.dtype))


def _describe_tf(value: Any) -> Described:
    import tensorflow as tf

    if isinstance(value, tf.RaggedTensor):
        return Described(
            value, "ragged", tuple(value.shape.as_list()), value.dtype.name, ragged_rank=value.ragged_rank
        )
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

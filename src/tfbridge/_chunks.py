"""Chunks: many small elements per trip from Python into tf.data.

``from_generator`` costs a Python call per yielded value (about half a millisecond here), which caps any
Python source near 2,000 elements/s however fast it is. Consecutive dense elements of one shape are therefore
stacked into a chunk on the Python side and split again by tf.data's ``unbatch`` in C++. A chunk is cut when the
shape changes (a short last batch), when it is full, or when it has waited long enough, so a slow source still
delivers its first element promptly.

Text travels in chunks too: a string leaf is an object array of ``str``/``bytes`` (stacking copies pointers, not
the text), and TensorFlow converts a chunk of strings in one call instead of one call per element.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tfbridge import _nest

CHUNK_MAX_ELEMENTS = 64
CHUNK_MAX_BYTES = 4 * 1024 * 1024
CHUNK_ELEMENT_LIMIT_BYTES = 256 * 1024  # bigger elements travel one by one: stacking would copy them
CHUNK_MAX_WAIT_S = 0.05
CHUNK_MAX_INTERVAL_S = CHUNK_MAX_WAIT_S  # chunking delays an element by at most about one more interval


def worth_chunking(spec: Any, bytes_per_element: float, seconds_per_element: float) -> bool:
    """Chunk when every field is dense, elements are small, and they arrive fast enough that waiting for the
    next one costs nothing noticeable (a chunk is cut when the next element arrives late, not before)."""
    return (
        all(leaf.kind == "dense" for _, leaf in spec.fields())
        and bytes_per_element < CHUNK_ELEMENT_LIMIT_BYTES
        and seconds_per_element < CHUNK_MAX_INTERVAL_S
    )


def chunk_signature(signature: Any) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(lambda s: tf.TensorSpec((None, *s.shape), s.dtype), signature)


def chunked(elements: Iterable[Any], stall: Any = None) -> Iterator[Any]:
    """Stack consecutive same-shaped elements (conformed dense nests: ndarrays, numpy scalars, and the ``bytes``
    a scalar tf.string tensor gives) into chunks with a leading axis. ``stall``: the marker ``elements`` yields
    when its next element keeps us waiting (the executors' STALL): what is held is delivered at once, so one slow
    element never holds back the finished ones before it."""
    group: list[list[np.ndarray]] = []
    shapes: list[tuple[int, ...]] = []
    treespec = None
    size = 0
    started = 0.0
    it = iter(elements)
    while True:
        try:
            element = next(it)
        except StopIteration:
            break
        except BaseException:
            if group:  # what came before a failing element is delivered before its error
                yield _stack(group, treespec)
            raise
        if element is stall and stall is not None:
            if group:
                yield _stack(group, treespec)
                group, size = [], 0
            continue
        leaves, spec = _nest.flatten(element)
        leaves = [as_array(leaf) for leaf in leaves]
        leaf_shapes = [leaf.shape for leaf in leaves]
        if group and (
            leaf_shapes != shapes
            or len(group) >= CHUNK_MAX_ELEMENTS
            or size >= CHUNK_MAX_BYTES
            or time.perf_counter() - started >= CHUNK_MAX_WAIT_S
        ):
            yield _stack(group, treespec)
            group, size = [], 0
        if not group:
            shapes, treespec, started = leaf_shapes, spec, time.perf_counter()
        group.append(leaves)
        size += sum(nbytes(leaf) for leaf in leaves)
    if group:
        yield _stack(group, treespec)


def as_array(leaf: Any) -> np.ndarray:
    """A conformed dense leaf as an ndarray: text stays Python objects (numpy's fixed-width strings would drop
    trailing NUL bytes and cannot hold arbitrary bytes as text)."""
    if isinstance(leaf, np.ndarray):
        return leaf
    if isinstance(leaf, (str, bytes)):
        return np.array(leaf, dtype=object)
    return np.asarray(leaf)


def nbytes(leaf: np.ndarray) -> int:
    """Bytes a leaf holds, counting the text of a string leaf (an object array holds only pointers itself)."""
    if leaf.dtype != object:
        return leaf.nbytes
    return leaf.nbytes + sum(len(v) for v in leaf.flat if isinstance(v, (str, bytes)))


def _stack(group: list[list[np.ndarray]], treespec: Any) -> Any:
    # always a fresh copy, also for a chunk of one: a view of the source's own memory could be aliased by
    # TensorFlow, whose kernels may then reuse (write into) that buffer
    return _nest.unflatten(treespec, [stack_column(column) for column in zip(*group, strict=False)])


def stack_column(column: tuple[np.ndarray, ...]) -> np.ndarray:
    first = column[0].dtype
    if first.kind in "USO" and any(leaf.dtype != first for leaf in column):
        # str and bytes of one string field (numpy would decode bytes as ASCII text, or fail): as objects
        return np.stack([leaf.astype(object) for leaf in column])
    return np.stack(column)

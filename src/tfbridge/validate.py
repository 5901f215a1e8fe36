"""Check one element against a spec and convert it to the spec's dtypes.

:class:`Conformer` is the one place that decides whether an element fits a spec. It runs wherever elements
are produced (main thread, worker threads, worker processes) and needs numpy only: dense fields come out as
ndarrays, ragged fields as :class:`RaggedParts`, sparse fields as :class:`SparseParts`; :func:`to_tensors`
turns those into TensorFlow values in the process that feeds tf.data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tfbridge import _nest
from tfbridge._checks import short
from tfbridge._values import STRING, ValueProblem, describe
from tfbridge.errors import NonFiniteError, SpecMismatchError
from tfbridge.spec import Leaf, Spec, format_shape, lists_as_tuples


@dataclass(frozen=True)
class RaggedParts:
    """A ragged tensor as numpy parts: flat values and one row_splits array per ragged dimension."""

    flat_values: np.ndarray
    nested_row_splits: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class SparseParts:
    indices: np.ndarray
    values: np.ndarray
    dense_shape: np.ndarray


def numpy_dtype(name: str) -> np.dtype:
    if name == STRING:
        return np.dtype(object)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)  # type: ignore[no-any-return]
    return np.dtype(name)


# Binary digits of each float dtype's significand: integers of up to that many bits convert exactly.
EXACT_DIGITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53, "complex64": 24, "complex128": 53}


class Conformer:
    """Callable ``(element, index) -> element`` fitted to ``spec``; raises SpecMismatchError.

    ``finite``: float fields must hold no NaN or Inf (NonFiniteError names the element, row and field). A
    batched spec over whole columns or blocks of examples is called with ``index=None``; ``rows`` then gives the
    element index of each row (default: the row number itself).

    ``check=False`` (``validate="none"``) skips the checks of dense fields but still converts them to the spec's
    dtypes (the float cast, an explicit spec): tf.data takes no other dtype."""

    def __init__(self, spec: Spec, *, finite: bool = False, check: bool = True) -> None:
        self.spec, self.finite, self.check = spec, finite, check
        paths, self.leaves, self.treespec = _nest.flatten_with_paths(spec.structure)
        self.paths = [_nest.format_path(p, spec.structure) for p in paths]
        self.out_treespec = _nest.flatten(lists_as_tuples(spec.structure))[1]  # the form of spec.signature
        self._floats = [leaf.dtype in FLOAT_DTYPES for leaf in self.leaves]
        # per leaf, what a numpy value that already fits must have (dense numeric leaves): its dtype, its rank and
        # its fixed dimensions; None for the others
        self._fits = [
            (np.dtype(leaf.dtype), len(leaf.shape), [(k, n) for k, n in enumerate(leaf.shape) if n is not None])
            if leaf.kind == "dense" and leaf.dtype not in (STRING, "bfloat16")
            else None
            for leaf in self.leaves
        ]
        # a plain tuple of fields (x, y): a tuple element of numpy values needs no flattening
        structure = spec.structure
        self._flat = type(structure) is tuple and all(type(leaf) is Leaf for leaf in structure)

    def __call__(self, element: Any, index: int | None, rows: Any = None) -> Any:
        if (
            self._flat
            and self.check
            and type(element) is tuple
            and len(element) == len(self.leaves)
            and all(type(v) is np.ndarray or isinstance(v, np.generic) for v in element)
        ):
            values = list(element)
        else:
            element = _nest.normalize(element)
            values, treespec = _nest.flatten(element)
            if treespec != self.treespec:
                self._structure_error(element, index)
        if not self.check:
            fields = zip(values, self.leaves, self.paths, strict=True)
            return _nest.unflatten(self.out_treespec, [self._cast(v, leaf, path, index) for v, leaf, path in fields])
        out = [
            (v if type(v) is np.ndarray else np.asarray(v))
            if self._fitting(v, fit)
            else self._leaf(v, leaf, path, index)
            for v, fit, leaf, path in zip(values, self._fits, self.leaves, self.paths, strict=False)
        ]
        if self.spec.batched:
            self._check_batch_sizes(out, index)
        if self.finite:
            for value, path, is_float in zip(out, self.paths, self._floats, strict=True):
                if is_float:
                    _check_finite(value, path, index, rows, self.spec.batched)
        return tuple(out) if self._flat else _nest.unflatten(self.out_treespec, out)

    @staticmethod
    def _fitting(value: Any, fit: tuple[np.dtype, int, list[tuple[int, int]]] | None) -> bool:
        """Whether ``value`` is a numpy array or scalar that fits a dense leaf as it is (the common case, checked
        without describing it); anything else goes through the full check."""
        if fit is None or (type(value) is not np.ndarray and not isinstance(value, np.generic)):
            return False
        dtype, rank, fixed = fit
        shape = value.shape
        return value.dtype == dtype and len(shape) == rank and all(shape[k] == n for k, n in fixed)

    # -- errors -------------------------------------------------------------------------------------
    def _structure_error(self, element: Any, index: int | None) -> None:
        found = _nest.structure_difference(self.spec.structure, element)
        where, expected, got = found or ((), "the spec's structure", "another structure")
        path = _nest.format_path(where, self.spec.structure)
        msg = (
            f"{_at(index)}{path}: expected {expected}, got {got}.\n"
            "Hint: every element must have the structure of the spec; check the source for an element "
            "that returns a different tuple or dict."
        )
        raise SpecMismatchError(msg, index=index, path=path, expected=expected, got=got)

    @staticmethod
    def _mismatch(index: int | None, path: str, expected: str, got: str, hint: str, value: Any = None) -> None:
        received = f" Received: {short(value)}" if value is not None else ""
        msg = f"{_at(index)}{path}: expected {expected}, got {got}.{received}\nHint: {hint}"
        raise SpecMismatchError(msg, index=index, path=path, expected=expected, got=got)

    def _check_batch_sizes(self, out: list[Any], index: int | None) -> None:
        sizes = {}
        for path, value in zip(self.paths, out, strict=False):
            if isinstance(value, np.ndarray):
                sizes[path] = value.shape[0]
            elif isinstance(value, RaggedParts):
                sizes[path] = len(value.nested_row_splits[0]) - 1
            else:
                sizes[path] = int(value.dense_shape[0])
        if len(set(sizes.values())) > 1:
            first = next(iter(sizes))
            other = next(p for p, n in sizes.items() if n != sizes[first])
            self._mismatch(
                index,
                other,
                f"batch size {sizes[first]} (as {first})",
                f"batch size {sizes[other]}",
                "every field of a batch needs the same leading dimension.",
            )

    # -- one field ------------------------------------------------------------------------------------
    def _cast(self, value: Any, leaf: Leaf, path: str, index: int | None) -> Any:
        if leaf.kind != "dense" or leaf.dtype == STRING:  # ragged and sparse parts are built by the checks
            return self._leaf(value, leaf, path, index)
        arr = np.asarray(value)
        target = numpy_dtype(leaf.dtype)
        if arr.dtype == target:
            return arr
        narrowing_floats = (arr.dtype.kind == "f" and (target.kind in "fc" or leaf.dtype == "bfloat16")) or (
            arr.dtype.kind == "c" and target.kind == "c"
        )
        if narrowing_floats:  # as everywhere in Keras
            return arr.astype(target, copy=False)
        # unchecked (validate="none") still never wraps or rounds: _convert refuses a lossy conversion everywhere
        return self._convert(arr, arr.dtype.name, leaf, path, index)

    def _leaf(self, value: Any, leaf: Leaf, path: str, index: int | None) -> Any:
        try:
            d = describe(value)
        except ValueProblem as exc:
            self._mismatch(
                index, path, leaf.describe(), str(exc), "fields must be arrays, tensors, numbers or strings.", value
            )
        if len(d.shape) != leaf.rank:
            self._mismatch(
                index,
                path,
                f"shape {format_shape(leaf.shape)} (rank {leaf.rank})",
                f"shape {format_shape(d.shape)} (rank {len(d.shape)})",
                _channels_hint(leaf.shape, d.shape) or "a field must have the same rank in every element.",
            )
        for want, have in zip(leaf.shape, d.shape, strict=False):
            if want is not None and have is not None and want != have:
                self._mismatch(
                    index,
                    path,
                    f"shape {format_shape(leaf.shape)}",
                    f"shape {format_shape(d.shape)}",
                    _channels_hint(leaf.shape, d.shape)
                    or "this element's shape differs from the spec; the peek may have missed it. "
                    "Infer with a larger peek, pass spec= with None for dimensions that vary, "
                    "or run tb.validate(source), which lists every such element.",
                )
        if leaf.kind == "dense":
            if d.kind != "dense":
                self._mismatch(
                    index,
                    path,
                    f"a dense {leaf.describe()}",
                    f"a {d.kind} value of shape {format_shape(d.shape)}",
                    "pad the rows to one length, or give a spec where this field is ragged.",
                )
            return self._convert(d.value, d.dtype, leaf, path, index)
        if leaf.kind == "ragged":
            if d.kind == "sparse":
                self._mismatch(index, path, leaf.describe(), "a sparse value", "give this field one kind.")
            return self._ragged(d.value, d.kind, d.dtype, leaf, path, index)
        return self._sparse(d.value, d.kind, d.dtype, leaf, path, index)

    def _convert(self, arr: np.ndarray, have: str | None, leaf: Leaf, path: str, index: int | None) -> np.ndarray:
        want = leaf.dtype
        if have == want:
            return arr
        if have is None:  # empty list: nothing to convert
            return np.asarray(arr, dtype=numpy_dtype(want))
        if want == STRING or have == STRING:
            self._mismatch(
                index, path, f"dtype {want}", f"dtype {have}", "strings and numbers do not convert into each other."
            )
        target = numpy_dtype(want)
        source_kind, target_kind = arr.dtype.kind, target.kind
        ok = (
            (target_kind == "c" and source_kind in "biufc")
            or (target_kind == "f" and source_kind in "biuf")
            or (want == "bfloat16" and source_kind in "biuf")
            or (target_kind in "iu" and source_kind in "biu")
            or (target_kind == "b" and source_kind == "b")
        )
        if not ok:
            self._mismatch(
                index,
                path,
                f"dtype {want}",
                f"dtype {have}",
                f"converting {have} to {want} would lose information; "
                "convert it in the source, or change the spec's dtype.",
            )
        if target_kind in "iu" and source_kind in "iu" and not np.can_cast(arr.dtype, target) and arr.size:
            info = np.iinfo(target)
            low, high = arr.min(), arr.max()
            if low < info.min or high > info.max:
                self._mismatch(
                    index,
                    path,
                    f"dtype {want} (range {info.min}..{info.max})",
                    f"{have} values from {low} to {high}",
                    "these values do not fit the spec's integer dtype; widen the dtype in the spec.",
                )
        digits = EXACT_DIGITS.get(want)
        bits = arr.dtype.itemsize * 8 - (source_kind == "i")  # an integer's magnitude bits
        if source_kind in "iu" and digits is not None and bits > digits and arr.size:
            return self._exact_floats(arr, target, have, want, path, index)
        return arr.astype(target, copy=False)

    def _exact_floats(
        self, arr: np.ndarray, target: np.dtype, have: str, want: str, path: str, index: int | None
    ) -> np.ndarray:
        """Integers into a float dtype that cannot hold every one of their values: each value is checked to come
        back unchanged (float32 holds integers exactly up to 2**24, float16 up to 2048, bfloat16 up to 256; past
        that only some, and float16 overflows at 65520). Values within the exact range, the usual case, are
        found so by their minimum and maximum alone."""
        exact = 2 ** EXACT_DIGITS[want]
        if -exact <= int(arr.min()) and int(arr.max()) <= exact:
            return arr.astype(target)
        with np.errstate(invalid="ignore", over="ignore"):
            out = arr.astype(target)
            changed = (out.astype(arr.dtype) != arr) | ~np.isfinite(out)
        if changed.any():
            at = int(np.flatnonzero(changed.reshape(-1))[0])
            value, became = arr.reshape(-1)[at], out.reshape(-1)[at]
            self._mismatch(
                index,
                path,
                f"dtype {want}",
                f"{have} value {value}, which {want} holds as {became}",
                f"converting these integers to {want} would change them; give the spec a float dtype that holds them "
                "(float64 holds every integer up to 2**53) or an integer dtype.",
            )
        return out

    def _ragged(self, value: Any, kind: str, have: str | None, leaf: Leaf, path: str, index: int | None) -> RaggedParts:
        flat, splits = ragged_parts(value, leaf.ragged_rank, text=leaf.dtype == STRING)
        if len(splits) > leaf.ragged_rank:
            self._mismatch(
                index,
                path,
                f"ragged_rank {leaf.ragged_rank}",
                f"ragged_rank {len(splits)}",
                "more dimensions vary than the spec allows; give a spec with a higher ragged_rank.",
            )
        while len(splits) < leaf.ragged_rank:  # uniform dimensions of the value become row splits
            rows = len(flat)
            width = flat.shape[1] if flat.ndim > 1 else 0
            splits.append(np.arange(rows + 1, dtype=np.int64) * width)  # width 0: rows + 1 zeros
            flat = flat.reshape((rows * width, *flat.shape[2:]))
        flat = self._convert(flat, have if flat.size else None, _flat_leaf(leaf), path, index)
        return RaggedParts(flat, tuple(np.asarray(s, dtype=np.int64) for s in splits))

    def _sparse(self, value: Any, kind: str, have: str | None, leaf: Leaf, path: str, index: int | None) -> SparseParts:
        if kind == "ragged":
            self._mismatch(index, path, leaf.describe(), "a ragged value", "give this field one kind.")
        if type(value).__module__.startswith("tensorflow"):
            indices, values, shape = value.indices.numpy(), value.values.numpy(), value.dense_shape.numpy()
        elif type(value).__module__.startswith("scipy"):
            order = np.lexsort((value.col, value.row))
            indices = np.stack([value.row[order], value.col[order]], axis=1)
            values, shape = value.data[order], np.asarray(value.shape)
        else:
            arr = np.asarray(value)
            indices = np.argwhere(arr != 0)
            values, shape = arr[tuple(indices.T)], np.asarray(arr.shape)
        values = self._convert(values, have, Leaf((None,), leaf.dtype), path, index)
        return SparseParts(indices.astype(np.int64), values, shape.astype(np.int64))


FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "complex64", "complex128"})


def first_non_finite(value: Any) -> tuple[int, tuple[int, ...], str] | None:
    """(row, position, "NaN" | "Inf") of the first non-finite value of a converted field (row: along the first
    axis, for dense and ragged values), or None when every value is finite."""
    if isinstance(value, RaggedParts):
        flat = value.flat_values
    elif isinstance(value, SparseParts):
        flat = value.values
    else:
        flat = value
    if flat.size == 0:
        return None
    finite = np.isfinite(flat)
    if finite.all():
        return None
    at = np.unravel_index(int(np.argmin(finite)), flat.shape)
    what = "NaN" if np.isnan(flat[at]) else "Inf"
    if isinstance(value, RaggedParts):  # flat position -> row of each ragged level, outermost last
        row = int(at[0])
        for splits in reversed(value.nested_row_splits):
            row = int(np.searchsorted(splits, row, side="right")) - 1
        return row, tuple(int(a) for a in at), what
    if isinstance(value, SparseParts):
        return int(value.indices[at[0]][0]) if value.indices.shape[1] else 0, tuple(value.indices[at[0]]), what
    return int(at[0]) if flat.ndim else 0, tuple(int(a) for a in at), what


def _check_finite(value: Any, path: str, index: int | None, rows: Any, batched: bool) -> None:
    found = first_non_finite(value)
    if found is None:
        return
    row, position, what = found
    if batched and index is None:  # a column or block of examples: each row is an element
        element = int(rows[row]) if rows is not None else row
        where, at = f"element {element} at ", ""
    else:
        element = index if index is not None else 0
        where = _at(index)
        at = f" (row {row} of the batch)" if batched else ""
    msg = (
        f"{where}{path}{at} holds {what} at position {list(position)}, but finite=True asks for finite values.\n"
        "Hint: fix or drop such values where the source makes them (np.nan_to_num, a filter, a fill of missing "
        "values); tb.validate(source, finite=True) lists every element that holds one."
    )
    raise NonFiniteError(msg, index=element, path=path, expected="finite values", got=what)


_CHANNEL_COUNTS = (1, 3, 4)  # grayscale, RGB, RGBA


def _channels_hint(want: tuple[int | None, ...], have: tuple[int | None, ...]) -> str | None:
    """A hint for the classic: one grayscale (or RGBA) image among RGB ones. Seen as a field of rank 3 or more
    whose last axis alone differs (1, 3 or 4 on both sides), or that lacks the last axis altogether."""
    if len(want) < 3 or want[-1] not in _CHANNEL_COUNTS:
        return None
    if not all(w is None or h is None or w == h for w, h in zip(want[:-1], have, strict=False)):
        return None
    if len(have) == len(want) - 1:
        return (
            f"this looks like a grayscale image without its channel axis; the spec has {want[-1]} channels. "
            "Add the axis where the source reads it (image[..., np.newaxis], then np.repeat(image, 3, axis=-1) "
            "for RGB); tb.validate(source) lists every such element."
        )
    if len(have) != len(want) or have[-1] not in _CHANNEL_COUNTS:
        return None
    return (
        f"the last axis looks like image channels: {have[-1]} here, {want[-1]} in the spec. "
        "Convert it where the source reads it (PIL: image.convert('RGB'); numpy: np.repeat(gray, 3, axis=-1) "
        "or rgba[..., :3]); tb.validate(source) lists every such element."
    )


def _flat_leaf(leaf: Leaf) -> Leaf:
    return Leaf((None, *leaf.shape[leaf.ragged_rank + 1 :]), leaf.dtype)


def ragged_parts(value: Any, ragged_rank: int, text: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Flat values and row splits of a ragged value: a tf.RaggedTensor, or a nested list (or dense array) split
    down to ``ragged_rank``. Text stays in an object array: numpy's fixed-width strings would drop trailing NUL
    characters."""
    if type(value).__module__.startswith("tensorflow"):
        return value.flat_values.numpy(), [s.numpy() for s in value.nested_row_splits]
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value, []
    if (
        ragged_rank == 1
        and not text
        and len(value)
        and all(isinstance(row, np.ndarray) and row.dtype != object for row in value)
    ):  # rows that are arrays already (token id lists of a DataFrame or Arrow column): no per-value Python
        rows = list(value)
        row_lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
        return np.concatenate(rows), [np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)]
    level: list[Any] = list(value)
    splits: list[np.ndarray] = []
    for _ in range(ragged_rank):
        lengths = [len(item) for item in level]
        splits.append(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64))
        nxt: list[Any] = []
        for item in level:
            nxt.extend(item)
        level = nxt
    if not level:
        return np.zeros((0,), np.float32), splits
    return (np.array(level, dtype=object) if text else np.asarray(level)), splits


def to_tensors(element: Any) -> Any:
    """Turn RaggedParts / SparseParts leaves into TensorFlow values (call where TensorFlow runs)."""
    leaves, treespec = _nest.flatten(element)
    if all(isinstance(v, np.ndarray) for v in leaves):
        return element
    import tensorflow as tf

    out = []
    for v in leaves:
        if isinstance(v, RaggedParts):
            v = tf.RaggedTensor.from_nested_row_splits(v.flat_values, v.nested_row_splits, validate=False)
        elif isinstance(v, SparseParts):
            v = tf.SparseTensor(v.indices, v.values, v.dense_shape)
        out.append(v)
    return _nest.unflatten(treespec, out)


def _at(index: int | None) -> str:
    return f"element {index} at " if index is not None else "at "

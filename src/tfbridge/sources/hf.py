"""HuggingFace ``datasets``: a ``Dataset`` read in slices through Arrow, an ``IterableDataset`` as a stream.

A ``datasets.Dataset`` is never read one example at a time through ``ds[i]`` (60-400 µs per example, against
3-40 µs per example for a slice). Its Arrow table — the columns its format selects, through its indices mapping
when it was shuffled, selected or filtered — is read column by column into numpy, whatever format is set
(python, numpy, tf, torch, arrow, ...):

- numbers stay numbers, without a copy where Arrow allows it; ``ClassLabel`` columns are int64;
- strings (and binary) become object arrays of ``str`` (``bytes``), ``tf.string`` in the spec;
- lists of one length in every row (fixed-length ``List``/``Sequence``, ``Array2D``-``Array5D``) become dense
  n-D arrays; lists whose length varies (token ids) become ragged rows, one 1-D array per example, padded by
  ``tb.pad_batch``; lists of lists whose inner lengths vary too become ragged fields;
- dicts (``{'a': Value, ...}``, ``Translation``) become dicts of columns; a list of dicts becomes a dict of
  lists, as datasets itself returns it;
- a null anywhere is a ``SpecInferenceError`` naming the column (an integer column with nulls would otherwise
  become float NaN without a word).

Routes, by size:

- **in memory** (the fastest): when the Arrow data of the rows and columns read — ``table.nbytes`` of the
  selected columns, in proportion to the rows the dataset holds — fits :func:`memory_budget` (a quarter of the
  RAM this process may use), the columns become an :class:`~tfbridge.sources.arrays.ArraysSource`: rows are
  gathered by index inside tf.data, shuffled by index, no Python per element. Its spec is read from the data
  (exact: a list column whose rows all have one length has that length);
- **blocks**: a bigger dataset is read a block of examples at a time (contiguous slices in order, index lists
  in a fresh permutation each epoch when shuffled), each block converted at once and split into examples by
  tf.data. Its spec comes from the Arrow types and the list lengths of the whole table (only offsets are read).

A dataset with a custom transform (``with_transform``/``set_transform``) or with features that datasets must
decode (``Image``, ``Audio``, ``Video``, ...) is read in blocks too, through datasets' own formatting (so the
transform and the decoding run once per block), with the spec from a peek like any Python source.

``batched=True`` (each row already a batch) reads ``ds[i]`` row by row, as any indexed source; without
``batched``, rows that ``Dataset.batch(n)`` made are recognised by their data (:func:`_rows_are_batches`).

A ``datasets.IterableDataset`` is a :class:`~tfbridge.sources.stream.StreamSource` of its examples (dicts),
each converted to numpy (with the dtypes its features declare, when it has features); of its batches when its
pipeline holds datasets' own ``.batch(n)``.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge import _nest
from tfbridge._checks import find_stacklevel, short
from tfbridge._values import array_like
from tfbridge.errors import SpecInferenceError, TfBridgeError, TfBridgeWarning
from tfbridge.sources._base import (
    BuildPlan,
    Built,
    Peek,
    Problems,
    Runner,
    Task,
    TfDataEpochs,
    infer_from_peek,
    nbytes,
    without_buckets,
)
from tfbridge.sources.arrays import ArraysSource, gather_rows, split_blocks
from tfbridge.sources.indexed import IndexedSource
from tfbridge.sources.labels import Label, split_label
from tfbridge.sources.stream import StreamSource

if TYPE_CHECKING:
    from tfbridge.sources._base import Source
    from tfbridge.spec import Inference, Leaf, Spec

MEMORY_FRACTION = 0.25  # of the RAM this process may use: the most Arrow data read into memory at once
BLOCK_BYTES = 4 * 1024 * 1024  # a block of the block route holds about this much Arrow data
BLOCK_ROWS = (64, 16_384)  # ... and this many examples at least and at most
FORMATTED_BLOCK_ROWS = 256  # examples per block when datasets formats them (transforms, decoding)


def memory_budget() -> int:
    """Bytes of Arrow data a Dataset may have to be read whole into memory: ``MEMORY_FRACTION`` of the RAM this
    process may use (physical memory, or a lower cgroup limit)."""
    return int(_ram() * MEMORY_FRACTION)


def _ram() -> int:
    try:
        total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        total = 8 << 30  # no sysconf (Windows): assume a modest machine
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


# -- dispatch -------------------------------------------------------------------------------------------------
def adapt(obj: Any, batched: bool | None) -> Source | None:
    """The source for a datasets object (None: not one this module reads)."""
    import datasets

    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(obj)
        example = f"ds[{splits[0]!r}]" if splits else "ds['train']"
        msg = (
            f"a {type(obj).__name__} holds several splits ({', '.join(map(repr, splits)) or 'none'}), not one "
            f"dataset.\nHint: pass one split, e.g. {example}."
        )
        raise TfBridgeError(msg)
    if isinstance(obj, datasets.IterableDataset):
        return iterable_source(obj, batched)
    if isinstance(obj, datasets.Dataset):
        return dataset_source(obj, batched)
    return None


def dataset_source(ds: Any, batched: bool | None = None) -> Source:
    """The source of a ``datasets.Dataset``: in memory when it fits :func:`memory_budget`, else in blocks."""
    names = _selected_columns(ds)
    if len(ds) == 0:  # its columns are not read (a column of no values has type null): inferring says it is empty
        return HFBlockSource(ds, _ArrowReader(ds, names))
    if batched is None:  # features datasets decodes (images...) or a custom transform: rows stay examples
        plain = ds.format.get("type") != "custom" and not _needs_decoding(ds, names)
        batched = plain and _rows_are_batches(ds, names)
    if batched:  # each row is a batch already: read by index, row by row
        view = ds if ds.format.get("type") == "custom" else ds.with_format(None, columns=names)
        return IndexedSource(view, True, transform=functools.partial(numpy_example, features=ds.features))
    if ds.format.get("type") == "custom" or _needs_decoding(ds, names):
        return HFBlockSource(ds, _FormattedReader(ds, names))
    reader = _ArrowReader(ds, names)
    if reader.nbytes() <= memory_budget():
        return HFArraysSource(ds, reader.columns())
    return HFBlockSource(ds, reader)


def iterable_source(ids: Any, batched: bool | None = None) -> StreamSource:
    """An ``IterableDataset`` as a stream of its examples, each converted to numpy (of its batches, when its own
    pipeline batches them: ``IterableDataset.batch()``)."""
    if batched is None:
        batched = _batch_step(ids) is not None
    plain = ids.with_format(None)  # python examples, converted here (datasets' numpy format loses empty lists' dtype)
    convert = functools.partial(numpy_example, features=ids.features)
    return StreamSource(ids, bool(batched), iterate=lambda: iter(plain), transform=convert)


_BATCH_FUNCTIONS = ("_batch_fn", "_batch_arrow_table", "_batch_accumulate_arrow_table_by_columns")


def _batch_step(ids: Any) -> Any:
    """The step of an IterableDataset's pipeline that ``IterableDataset.batch()`` made (datasets' own batching
    function in a batched map), or None."""
    step = getattr(ids, "_ex_iterable", None)
    seen = 0
    while step is not None and seen < 64:
        function = getattr(step, "function", None)
        function = getattr(function, "func", function)  # a functools.partial
        ours = str(getattr(function, "__module__", "")).startswith("datasets.")
        if getattr(step, "batched", False) and ours and getattr(function, "__name__", None) in _BATCH_FUNCTIONS:
            return step
        step, seen = getattr(step, "ex_iterable", None), seen + 1
    return None


def _rows_are_batches(ds: Any, names: Sequence[str]) -> bool:
    """Whether the rows of a Dataset are batches that ``Dataset.batch(n)`` made, as its data shows: every column a
    list, all columns of a row of one length, at least three rows, every row ``n`` long but one shorter (the last
    batch, wherever a shuffle put it); a guess, said in a TfBridgeWarning. Rows all of one length (``len(ds)`` a
    multiple of ``n``) look the same as examples of a fixed length (vectors, token ids padded to a length): they
    stay examples, the convention for datasets, without a warning (pass ``batched=True``)."""
    pa = _pa()

    if len(ds) < 3:  # two full rows and a short one at least: two rows of lists could be anything
        return False
    table = ds.data.table
    mapping = None if ds._indices is None else np.asarray(ds._indices.column(0).to_numpy(), dtype=np.int64)
    lengths: np.ndarray | None = None
    for name in names:
        column = table.column(name)
        kind = column.type.storage_type if isinstance(column.type, pa.ExtensionType) else column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            return False
        these = _lengths(column)
        these = these[mapping] if mapping is not None else these[: len(ds)]
        if lengths is None:
            lengths = these
        elif not np.array_equal(lengths, these):
            return False
    assert lengths is not None
    size = int(lengths.max())
    short_rows = np.flatnonzero(lengths != size)
    if size < 2 or short_rows.size != 1 or lengths[short_rows[0]] == 0:
        return False
    last = int(lengths[short_rows[0]])
    msg = (
        f"every column of this datasets.Dataset holds a list of {size} values in each row but one, which holds "
        f"{last}, as the rows of Dataset.batch({size}) do: each row is taken as a batch.\nHint: pass batched=False "
        "if each row is one example (a sequence of its own), or batched=True (either also silences this)."
    )
    warnings.warn(msg, TfBridgeWarning, stacklevel=find_stacklevel())
    return True


def _selected_columns(ds: Any) -> list[str]:
    """The columns ``ds[i]`` gives: those of its format (all of them with ``output_all_columns``)."""
    chosen = ds.format.get("columns")
    names = list(ds.column_names) if chosen is None or ds.format.get("output_all_columns") else list(chosen)
    if not names:
        msg = (
            "the dataset's format selects no columns, so its examples are empty.\n"
            "Hint: select columns with ds.with_format(columns=[...]) or ds.select_columns([...])."
        )
        raise TfBridgeError(msg)
    return names


def _needs_decoding(ds: Any, names: Sequence[str]) -> bool:
    from datasets.features.features import require_decoding

    features = ds.features
    return any(name in features and require_decoding(features[name]) for name in names)


# -- Arrow columns into numpy ------------------------------------------------------------------------------------
def _pa(module: str = "pyarrow") -> Any:
    """pyarrow (it has no type information; imported only when a datasets object is read)."""
    import importlib

    return importlib.import_module(module)


@dataclass(frozen=True)
class _Levels:
    """One column of Arrow data taken apart: its rows, one row-splits array (and the one length of every list,
    or None) per list level, and the innermost values."""

    rows: int
    offsets: tuple[np.ndarray, ...]
    sizes: tuple[int | None, ...]
    base: Any  # pyarrow.Array


class _Nulls(Exception):
    """A null in the data read (the caller names the example)."""

    def __init__(self, name: str, count: int, row: int | None, arrow_type: Any = None) -> None:
        super().__init__(name)
        self.name, self.count, self.row = name, count, row
        self.fill = _fill_for(arrow_type)


def _fill_for(arrow_type: Any) -> str:
    """A value of the column's type to show in a hint that fills its nulls (of its items for a list column)."""
    pa = _pa()

    t = arrow_type
    while t is not None and (_is_list(t) or isinstance(t, pa.ExtensionType) or pa.types.is_dictionary(t)):
        t = t.value_type if _is_list(t) or pa.types.is_dictionary(t) else t.storage_type
    if t is None:
        return "0"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "''"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "b''"
    if pa.types.is_boolean(t):
        return "False"
    if pa.types.is_floating(t):
        return "0.0"
    return "0"


def _is_list(arrow_type: Any) -> bool:
    pa = _pa()

    return bool(
        pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)
    )


def _plain(arr: Any, name: str, nulls: bool, top: bool = False) -> Any:
    """``arr`` without extension types (datasets' ArrayXD) or dictionary encoding; a null raises ``_Nulls``."""
    pa = _pa()

    if nulls and pa.types.is_null(arr.type):
        raise _Nulls(name, -1, None)
    while True:
        if isinstance(arr.type, pa.ExtensionType):
            arr = arr.storage
        elif pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        else:
            break
    if nulls and arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) if top else None
        raise _Nulls(name, int(arr.null_count), row, arr.type)
    return arr


def _lengths(arr: Any) -> np.ndarray:
    """The length of each list of a list array (or chunked array), also one stored as a list by an extension type
    (datasets' ``Array2D``...); nulls count as empty."""
    pa = _pa()
    if isinstance(arr.type, pa.ExtensionType):  # compute functions have no kernels for extension types
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        arr = pa.chunked_array([chunk.storage for chunk in chunks], type=arr.type.storage_type)
    return np.asarray(_pa("pyarrow.compute").list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False))


def _offsets(arr: Any) -> np.ndarray:
    """Row splits of a list array from 0, as ``arr.flatten()`` lays out its values (nulls count as empty)."""
    lengths = _lengths(arr)
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _uniform(arr: Any, offsets: np.ndarray) -> int | None:
    pa = _pa()

    if pa.types.is_fixed_size_list(arr.type):
        return int(arr.type.list_size)
    lengths = np.diff(offsets)
    if lengths.size and bool((lengths == lengths[0]).all()):
        return int(lengths[0])
    return None


def _wrap_like(lists: Any, child: Any, offsets: np.ndarray) -> Any:
    """``child`` (one field of the values of ``lists``) in lists of the same lengths."""
    pa = _pa()

    if pa.types.is_fixed_size_list(lists.type):
        return pa.FixedSizeListArray.from_arrays(child, lists.type.list_size)
    if pa.types.is_large_list(lists.type):
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), child)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), child)


def _struct_fields(arr: Any, name: str, nulls: bool) -> dict[str, Any] | None:
    """A struct array, or lists (of lists ...) of structs, as a dict of its fields, each in the same lists —
    datasets' convention for a list of dicts; None for any other array."""
    pa = _pa()

    arr = _plain(arr, name, nulls)
    if pa.types.is_struct(arr.type):
        return {f.name: child for f, child in zip(arr.type, arr.flatten(), strict=True)}
    if not _is_list(arr.type):
        return None
    inner = _struct_fields(arr.flatten(), name, nulls)
    if inner is None:
        return None
    offsets = _offsets(arr)
    return {key: _wrap_like(arr, child, offsets) for key, child in inner.items()}


def _walk(arr: Any, name: str, nulls: bool = True) -> Any:
    """A nest (dicts for structs) of ``_Levels`` for one column. ``nulls``: raise ``_Nulls`` on a null."""
    arr = _plain(arr, name, nulls, top=True)
    fields = _struct_fields(arr, name, nulls)
    if fields is not None:
        return {key: _walk(child, f"{name}[{key!r}]", nulls) for key, child in fields.items()}
    rows, offsets, sizes = len(arr), [], []
    while _is_list(arr.type):
        splits = _offsets(arr)
        offsets.append(splits)
        sizes.append(_uniform(arr, splits))
        arr = _plain(arr.flatten(), name, nulls)
    return _Levels(rows, tuple(offsets), tuple(sizes), arr)


def _dtype(arrow_type: Any, name: str) -> str:
    """The spec's dtype name of an Arrow value type."""
    pa = _pa()

    t = arrow_type
    if (
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t)
    ):  # fmt: skip
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return str(np.dtype(t.to_pandas_dtype()).name)
    if pa.types.is_null(t):
        raise _Nulls(name, -1, None)
    msg = (
        f"column {name}: the Arrow type {t} has no TensorFlow equivalent.\n"
        "Hint: turn it into numbers or strings first, e.g. ds.cast_column(...) or ds.map(...)."
    )
    raise SpecInferenceError(msg, path=name)


def _example_leaf(levels: _Levels, dims: Sequence[int | None], name: str) -> Leaf:
    """One example's leaf: the list levels of one length are dimensions; the last level whose lengths vary, and
    every level above it, is None. Only the first dimension varying: dense; a deeper one: ragged."""
    from tfbridge.spec import Leaf

    dtype = _dtype(levels.base.type, name)
    last = max((i for i, d in enumerate(dims) if d is None), default=-1)
    shape = tuple(None if i <= last else d for i, d in enumerate(dims))
    if last <= 0:
        return Leaf(shape, dtype)
    return Leaf(shape, dtype, "ragged", last)


@dataclass(frozen=True, eq=False)
class _Column:
    """One column in numpy: the dense values, or (ragged) the innermost values and their row splits."""

    values: np.ndarray
    splits: tuple[np.ndarray, ...]
    leaf: Leaf
    rows: int

    def value(self) -> Any:
        """What the Conformer reads: the dense array, or a tf.RaggedTensor (taken apart without Python per row)."""
        if not self.splits:
            return self.values
        import tensorflow as tf

        return tf.RaggedTensor.from_nested_row_splits(self.values, self.splits, validate=False)

    def row_objects(self) -> np.ndarray:
        """One entry per row, as ``ArraysSource`` holds it: the dense array, or an object array of rows."""
        if not self.splits:
            return self.values
        out = np.empty(self.rows, dtype=object)
        if not self.rows:
            return out
        items: Any = self.values
        for splits in reversed(self.splits[1:]):
            items = [items[a:b] for a, b in itertools.pairwise(splits.tolist())]
        top = self.splits[0]
        parts = (
            np.split(items, top[1:-1])
            if isinstance(items, np.ndarray)
            else [items[a:b] for a, b in itertools.pairwise(top.tolist())]
        )
        for i, part in enumerate(parts):
            out[i] = part
        return out


def _column(levels: _Levels, dims: Sequence[int | None], name: str) -> _Column:
    leaf = _example_leaf(levels, dims, name)
    last = max((i for i, d in enumerate(dims) if d is None), default=-1)
    splits = levels.offsets[: last + 1]
    inner = tuple(int(d) for d in dims[last + 1 :] if d is not None)
    values = levels.base.to_numpy(zero_copy_only=False)
    count = int(splits[-1][-1]) if splits else levels.rows
    return _Column(values.reshape((count, *inner)), splits, leaf, levels.rows)


def _map_levels(levels: Any, dims: Any, name: str) -> Any:
    """``_Column`` nest of a ``_Levels`` nest, with the list dimensions ``dims`` (a nest of size tuples)."""
    if isinstance(levels, dict):
        return {key: _map_levels(levels[key], dims[key], f"{name}[{key!r}]") for key in levels}
    return _column(levels, dims, name)


def _sizes(levels: Any) -> Any:
    if isinstance(levels, dict):
        return {key: _sizes(value) for key, value in levels.items()}
    return levels.sizes


def _merge_sizes(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {key: _merge_sizes(a[key], b[key]) for key in a}
    return tuple(x if x == y else None for x, y in zip(a, b, strict=True))


def _leaves_of(levels: Any, dims: Any, name: str) -> Any:
    if isinstance(levels, dict):
        return {key: _leaves_of(levels[key], dims[key], f"{name}[{key!r}]") for key in levels}
    return _example_leaf(levels, dims, name)


def _null_error(exc: _Nulls, column: str, index_of: Callable[[int], int] | None) -> SpecInferenceError:
    if exc.count < 0:
        what = "has type null: every value is missing"
    elif exc.row is not None:
        first = index_of(exc.row) if index_of is not None else exc.row
        what = f"has {exc.count} missing value(s) (nulls) in the examples read, the first in example {first}"
    else:
        what = f"has {exc.count} missing value(s) (nulls) inside its lists in the examples read"
    c = repr(column)
    if exc.row is None and exc.count >= 0:
        hint = (
            f"fill them first, e.g. ds.map(lambda e: {{{c}: [{exc.fill} if v is None else v for v in e[{c}]]}}), "
            f"or drop the examples that hold them: ds.filter(lambda e: None not in e[{c}])."
        )
    else:
        hint = (
            f"fill them first, e.g. ds.map(lambda e: {{{c}: {exc.fill} if e[{c}] is None else e[{c}]}}), or drop those "
            f"examples: ds.filter(lambda e: e[{c}] is not None)."
        )
    msg = (
        f"column {exc.name} of the dataset {what}. tfbridge does not turn nulls into NaN or any other value "
        f"(read into numpy, an integer column with nulls would silently become float NaN).\nHint: {hint}"
    )
    return SpecInferenceError(msg, path=exc.name)


def _whole(chunked: Any) -> Any:
    """A ChunkedArray as one Array (a copy only when it has several chunks)."""
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()


def _columns_of(table: Any, names: Sequence[str], dims: Any, index_of: Callable[[int], int] | None) -> Any:
    """A dict of ``_Column`` nests for the rows of ``table``. ``dims``: per column, the dimensions of each list
    level (None: those of these rows); ``index_of(i)``: the example that row ``i`` is, for messages."""
    out = {}
    for name in names:
        try:
            levels = _walk(_whole(table.column(name)), f"x[{name!r}]")
            out[name] = _map_levels(levels, dims[name] if dims is not None else _sizes(levels), f"x[{name!r}]")
        except _Nulls as exc:
            raise _null_error(exc, name, index_of) from None
    return out


def _contiguous(rows: np.ndarray) -> bool:
    return bool(len(rows)) and int(rows[-1]) - int(rows[0]) == len(rows) - 1 and bool((np.diff(rows) == 1).all())


class _ArrowReader:
    """The selected columns of a Dataset, read through Arrow by position (through its indices mapping when it
    has one): contiguous rows as a zero-copy slice, others with one ``take``."""

    def __init__(self, ds: Any, names: Sequence[str]) -> None:
        self.names = list(names)
        self.table = ds.data.table.select(self.names)
        indices = ds._indices  # the indices mapping of a shuffled / selected / filtered dataset
        self.mapping = None if indices is None else np.asarray(indices.column(0).to_numpy(), dtype=np.int64)
        self.size = len(ds)
        per_row = self.table.nbytes / max(self.table.num_rows, 1)
        self.block = int(np.clip(BLOCK_BYTES // max(per_row, 1.0), *BLOCK_ROWS))
        self._dims: Any = None
        self._leaves: Any = None

    @property
    def route(self) -> str:
        return (
            f"the dataset is read through Arrow in blocks of {self.block} examples, each converted at once and "
            "split into examples by tf.data; no Python per element"
        )

    def nbytes(self) -> int:
        """Arrow bytes of the selected columns, in proportion to the rows the dataset holds."""
        return int(self.table.nbytes * self.size / max(self.table.num_rows, 1))

    def rows(self, positions: np.ndarray | None) -> Any:
        """The Arrow rows at ``positions`` of the dataset (None: all of them, in order)."""
        if positions is None:
            if self.mapping is None:
                return self.table.slice(0, self.size)
            rows = self.mapping
        else:
            rows = positions if self.mapping is None else self.mapping[positions]
        if _contiguous(rows):
            return self.table.slice(int(rows[0]), len(rows))
        return self.table.take(rows)

    def columns(self) -> Any:
        """Every example, as ``_Column`` nests with the dimensions of this data."""
        return _columns_of(self.rows(None), self.names, None, None)

    def dims(self) -> Any:
        """Per column, the dimension of each list level over the whole table: one length, or None. Only the
        list offsets are read; nulls are looked for where rows are read."""
        if self._dims is None:
            dims, leaves = {}, {}
            for name in self.names:
                chunks = [c for c in self.table.column(name).chunks if len(c)] or [_whole(self.table.column(name))]
                merged, first = None, None
                for chunk in chunks:
                    levels = _walk(chunk, f"x[{name!r}]", nulls=False)
                    sizes = _sizes(levels)
                    merged = sizes if merged is None else _merge_sizes(merged, sizes)
                    first = first if first is not None else levels
                dims[name] = merged
                try:
                    leaves[name] = _leaves_of(first, merged, f"x[{name!r}]")
                except _Nulls as exc:
                    raise _null_error(exc, name, None) from None
            self._dims, self._leaves = dims, leaves
            self._check_nulls()
        return self._dims

    def _check_nulls(self) -> None:
        """A column with nulls in the examples of the dataset is refused now, not when its block is read (nulls
        in the table outside the dataset's indices mapping, e.g. filtered out, are not its examples). Only the
        validity bitmaps are read; nulls inside lists are found where their block is read."""
        for name in self.names:
            column = self.table.column(name)
            if not column.null_count:
                continue
            missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            missing = missing[self.mapping] if self.mapping is not None else missing[: self.size]
            found = np.flatnonzero(missing)
            if found.size:
                kind = -1 if _pa().types.is_null(column.type) else int(found.size)
                raise _null_error(_Nulls(f"x[{name!r}]", kind, int(found[0]), column.type), name, None)

    def leaves(self) -> Any:
        self.dims()
        return self._leaves

    def read(self, positions: np.ndarray) -> Any:
        columns = _columns_of(self.rows(positions), self.names, self.dims(), lambda i: int(positions[i]))
        return _nest.map_structure(lambda c: c.value(), columns)


class _FormattedReader:
    """Blocks of a Dataset through datasets' own formatting: its custom transform, or its decoding of images,
    audio and the like (as numpy), run once per block."""

    block = FORMATTED_BLOCK_ROWS

    def __init__(self, ds: Any, names: Sequence[str]) -> None:
        self.custom = ds.format.get("type") == "custom"
        self.ds = ds if self.custom else ds.with_format("numpy", columns=list(names))
        self.size = len(ds)

    @property
    def route(self) -> str:
        what = "its transform runs" if self.custom else "datasets decodes its features"
        return (
            f"the dataset is read in blocks of {self.block} examples ({what} once per block), each converted at "
            "once and split into examples by tf.data; no Python per element"
        )

    def leaves(self) -> Any:
        return None  # the spec comes from a peek

    def read(self, positions: np.ndarray) -> Any:
        from collections.abc import Mapping

        from tfbridge.sources._base import call_user

        key: Any = slice(int(positions[0]), int(positions[-1]) + 1) if _contiguous(positions) else positions.tolist()
        batch = call_user(self.ds.__getitem__, int(positions[0]) if len(positions) else None, key)
        if not isinstance(batch, Mapping):
            msg = (
                f"the dataset's transform returned {type(batch).__name__} for a block of examples; a dict of "
                f"columns was expected. Received: {short(batch)}\n"
                "Hint: a datasets transform takes a batch (dict of lists) and returns a dict of columns."
            )
            raise TfBridgeError(msg)
        return {key: _batch_value(value, repr(key)) for key, value in batch.items()}


def _batch_value(value: Any, name: str) -> Any:
    """A formatted column of a block in numpy: an array with one row per example, or a list of rows."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {key: _batch_value(v, f"{name}[{key!r}]") for key, v in value.items()}
    module = type(value).__module__
    if module.startswith("torch"):
        return value.detach().cpu().numpy()
    if module.startswith("tensorflow"):
        return value if type(value).__name__ == "RaggedTensor" else value.numpy()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    items = [_to_numpy(v, None, name) for v in value]
    arrays = items and all(isinstance(x, np.ndarray) and x.dtype != object for x in items)
    if arrays and len({(x.shape, x.dtype) for x in items}) == 1:
        return np.stack(items)
    out = np.empty(len(items), dtype=object)  # one entry per row: strings, or rows of different shapes (ragged)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _row(value: Any, j: int) -> Any:
    if type(value).__name__ == "RaggedTensor":
        row = value[j]
        return row.numpy() if hasattr(row, "numpy") else row.to_list()
    return value[j]


def _rows_of(block: Any, count: int) -> list[Any]:
    return [_nest.map_structure(lambda v, j=j: _row(v, j), block) for j in range(count)]


def _empty(name: str) -> SpecInferenceError:
    msg = (
        f"the dataset {name} is empty (0 examples): there is no element to infer a spec from.\n"
        "Hint: check that the dataset holds data (a filter or select may have removed every example)."
    )
    return SpecInferenceError(msg)


# -- the in-memory route ------------------------------------------------------------------------------------------
class HFArraysSource(ArraysSource):
    """An ArraysSource over a Dataset's columns read through Arrow. The spec is read from the Arrow data (exact,
    no row by row look), and list columns whose length varies become ragged tensors from their flat values and
    row splits, not row by row."""

    def __init__(self, obj: Any, columns: Any, batched: bool = False) -> None:
        super().__init__(obj, _nest.map_structure(lambda c: c.row_objects(), columns), batched)
        self.hf_columns = columns

    def infer(self, n: int, peek: Peek | None) -> Inference:
        from tfbridge.spec import Inference, Spec

        if self.length() == 0:
            raise _empty(self.name)
        if self.batched:
            return super().infer(n, peek)
        return Inference(Spec(_nest.map_structure(lambda c: c.leaf, self.hf_columns), batched=False))

    def with_label(self, label: Any) -> HFArraysSource:
        return HFArraysSource(self.obj, split_label(self.hf_columns, label), self.batched)

    def _conformed(self, spec: Spec, finite: bool = False) -> Any:
        from tfbridge.validate import Conformer

        values = _nest.map_structure(lambda c: c.value(), self.hf_columns)
        return Conformer(_column_spec(spec), finite=finite)(values, None)

    def build(self, plan: BuildPlan) -> Built:
        if self.batched:
            return super().build(plan)
        plan = without_buckets(plan)
        conformed = self._conformed(plan.spec, plan.finite)
        return Built(gather_rows(conformed, self.length(), plan), plan.batch_size is not None)

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        if self.batched:
            return super().check(spec, limit, runner, problems)
        n = self.length() if limit is None else min(limit, self.length())
        if n < self.length():
            return self.rows.check(spec, n, None, problems)
        try:  # whole columns at once; row by row only to name the elements that break the spec
            self._conformed(spec, problems is not None and problems.finite)
        except TfBridgeError:
            self.rows.check(spec, n, None, problems)
            if problems is None:
                raise
        return n


def _column_leaf(leaf: Leaf) -> Leaf:
    """The leaf of a whole column of examples with ``leaf``: a batch axis; a dense field whose size varies is
    held as a ragged column (split into dense examples again)."""
    from tfbridge.spec import Leaf

    if leaf.kind == "ragged":
        return Leaf((None, *leaf.shape), leaf.dtype, "ragged", leaf.ragged_rank + 1)
    if leaf.kind == "dense" and None in leaf.shape:
        last = max(i for i, d in enumerate(leaf.shape) if d is None)
        return Leaf((None, *leaf.shape), leaf.dtype, "ragged", last + 1)
    return Leaf((None, *leaf.shape), leaf.dtype, leaf.kind)


def _column_spec(spec: Spec) -> Spec:
    from tfbridge.spec import Spec

    return Spec(_nest.map_structure(_column_leaf, spec.structure), batched=True)


# -- the block route ---------------------------------------------------------------------------------------------
class HFBlockSource:
    """A Dataset read a block of examples at a time: contiguous slices in order, index lists in a fresh
    permutation each epoch when shuffled; each block converted at once, split into examples by tf.data.
    ``positions``: only these examples (a part), in this order."""

    batched = False
    random_access = True
    one_shot = False
    infinite = False

    def __init__(
        self, obj: Any, reader: Any, *, labels: tuple[Label, ...] = (), positions: np.ndarray | None = None
    ) -> None:
        self.obj, self.reader, self.labels, self.positions = obj, reader, labels, positions
        self._peeked: tuple[int, Peek] | None = None

    @property
    def name(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    @property
    def native_route(self) -> str:
        return str(self.reader.route)

    def length(self) -> int:
        return int(self.reader.size) if self.positions is None else len(self.positions)

    def order(self) -> np.ndarray:
        return np.arange(self.reader.size, dtype=np.int64) if self.positions is None else self.positions

    def read(self, positions: np.ndarray) -> Any:
        """The columns of the examples at ``positions``, label columns split off."""
        block = self.reader.read(positions)
        for label in self.labels:
            block = split_label(block, label)
        return block

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task | None:
        return None

    def peek(self, n: int) -> Peek:
        if self._peeked is None or self._peeked[0] != n:
            size = self.length()
            spread = sorted({int(i) for i in np.linspace(0, size - 1, min(n, size)).round()}) if size else []
            wall, cpu = time.perf_counter(), time.thread_time()
            rows = _rows_of(self.read(self.order()[spread]), len(spread)) if spread else []
            out = Peek(list(zip(spread, rows, strict=True)))
            out.wall_s, out.cpu_s = time.perf_counter() - wall, time.thread_time() - cpu
            out.nbytes = sum(nbytes(row) for row in rows)
            self._peeked = (n, out)
        return self._peeked[1]

    def infer(self, n: int, peek: Peek | None) -> Inference:
        from tfbridge.spec import Inference, Spec

        if self.length() == 0:
            raise _empty(self.name)
        leaves = self.reader.leaves()
        if leaves is None:
            return infer_from_peek(self, peek if peek is not None else self.peek(n))
        for label in self.labels:
            leaves = split_label(leaves, label)
        return Inference(Spec(leaves, batched=False))

    def with_label(self, label: Any) -> HFBlockSource:
        labels = (*self.labels, label)
        leaves = self.reader.leaves()
        if leaves is not None:  # a missing column is reported now, as for columns in memory
            for each in labels:
                leaves = split_label(leaves, each)
        elif self.length():
            HFBlockSource(self.obj, self.reader, labels=labels).read(np.arange(1))
        return HFBlockSource(self.obj, self.reader, labels=labels, positions=self.positions)

    def _blocks(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        for start in range(0, len(order), self.reader.block):
            positions = order[start : start + self.reader.block]
            yield positions, self.read(positions)

    def build(self, plan: BuildPlan) -> Built:
        import tensorflow as tf

        from tfbridge.sources import _positions, _python

        self._peeked = None  # the dataset (which TensorFlow keeps alive) must not keep peeked examples
        from tfbridge.validate import Conformer

        column_spec = _column_spec(plan.spec)
        epochs = _BlockEpochs(self, plan, Conformer(column_spec, finite=plan.finite))
        if _python.POSITIONED:
            passes = _positions.Passes(epochs, column_spec.signature, epochs.seed, plan.seed is not None, plan.errors)
            blocks = _positions.positioned_dataset(passes, column_spec.signature)
            _positions.attach(blocks, passes)
        else:
            generator: Callable[[], Iterator[Any]] = epochs
            if plan.errors is not None:
                generator = _python._Catching(epochs, plan.errors)
            blocks = _python.generator_dataset(TfDataEpochs(generator), column_spec.signature)
        ds = split_blocks(blocks, plan.spec)
        if plan.errors is None:  # a failed pass ends short, and must end without another error
            ds = ds.apply(tf.data.experimental.assert_cardinality(epochs.examples))
        return Built(ds)

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        order = self.order()
        if limit is not None:
            order = order[:limit]
        for positions, block in self._blocks(order):
            yield from _rows_of(block, len(positions))

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        from tfbridge.validate import Conformer

        finite = problems is not None and problems.finite
        whole, one = Conformer(_column_spec(spec), finite=finite), Conformer(spec, finite=finite)
        order = self.order() if limit is None else self.order()[:limit]
        count = 0
        for positions, block in self._blocks(order):
            try:  # a block at once; example by example only to name the examples that break the spec
                whole(block, None)
            except TfBridgeError:
                for j, row in enumerate(_rows_of(block, len(positions))):
                    if problems is None:
                        one(row, count + j)
                    else:
                        problems.check(one, row, count + j)
                if problems is None:
                    raise
            count += len(positions)
        return count

    def parts(self, n: int) -> list[HFBlockSource]:
        order = self.order()
        bounds = np.linspace(0, len(order), min(n, max(len(order), 1)) + 1).round().astype(np.int64)
        return [
            HFBlockSource(self.obj, self.reader, labels=self.labels, positions=order[a:b])
            for a, b in itertools.pairwise(bounds)
        ]


class _BlockEpochs:
    """A Dataset's passes of blocks, in order or in a fresh permutation each epoch: for the index-driven route
    (:meth:`open` at a block's position) and for ``from_generator`` (called once per pass)."""

    chunk = False  # a block is many examples already

    def __init__(self, src: HFBlockSource, plan: BuildPlan, conform: Any) -> None:
        from tfbridge.sources._python import fresh_seed

        self.src, self.conform = src, conform
        self.name = src.name
        self.shuffle, self.shard = plan.shuffle, plan.shard
        self.seed = plan.seed if plan.seed is not None else fresh_seed()
        self.epoch = 0
        total = src.length()
        self.examples = total if plan.shard is None else len(range(plan.shard[1], total, plan.shard[0]))
        self.count = -(-self.examples // src.reader.block)  # blocks in a pass

    def _order(self, epoch: int, seed: int) -> np.ndarray:
        order = self.src.order()
        if self.shuffle:
            order = order[np.random.default_rng([seed, epoch]).permutation(len(order))]
        if self.shard is not None:  # one permutation for all pipelines (same seed); each takes every k-th
            order = order[self.shard[1] :: self.shard[0]]
        return order

    def open(self, epoch: int, seed: int, position: int) -> Iterator[Any]:
        order = self._order(epoch, seed)[position * self.src.reader.block :]
        for positions, block in self.src._blocks(order):
            yield self.conform(block, None, positions)

    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass

    def __call__(self) -> Iterator[Any]:
        from tfbridge.validate import to_tensors

        epoch, self.epoch = self.epoch, self.epoch + 1
        for element in self.open(epoch, self.seed, 0):
            yield to_tensors(element)


# -- examples in numpy (IterableDataset, batched=True) --------------------------------------------------------
def numpy_example(example: Any, features: Any = None) -> Any:
    """One example of a datasets object in numpy: lists of numbers become arrays of the dtype the features
    declare (int64 / float64 without features), a list of dicts a dict of lists (as datasets gives it), tensors
    and images arrays; strings stay strings. A null is a SpecInferenceError naming the field."""
    return _to_numpy(example, features, "x")


def _to_numpy(value: Any, feature: Any, name: str) -> Any:
    from collections.abc import Mapping

    if value is None:
        msg = (
            f"{name} is null (None): a null is no tensor value.\n"
            "Hint: fill the nulls first (ds.map(...)), or drop those examples (ds.filter(...))."
        )
        raise SpecInferenceError(msg, path=name)
    if isinstance(value, Mapping):
        return {key: _to_numpy(v, _field(feature, key), f"{name}[{key!r}]") for key, v in value.items()}
    if isinstance(value, (str, bytes)):
        return value
    want = _numeric_dtype(feature)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) for v in value) and all(list(v) == list(value[0]) for v in value):
            inner = _inner(feature)
            return {key: _to_numpy([v[key] for v in value], _field(inner, key), f"{name}[{key!r}]") for key in value[0]}
        if not value and want is None:
            return []  # no dtype to tell: the spec merges it with the others
        try:
            arr = np.asarray(value, dtype=want)
        except (ValueError, TypeError, OverflowError):
            arr = None
        if (
            arr is not None
            and arr.dtype != object
            and arr.dtype.kind not in "USV"
            and (want is not None or arr.dtype.kind != "u")
        ):
            return arr
        items = [_to_numpy(v, _inner(feature), name) for v in value]
        if all(isinstance(v, np.ndarray) or (isinstance(v, list) and not v) for v in items):
            # rows of unequal length (token ids per sentence, a batch's sequences): one ragged value, as an object
            # array of its rows (their dtypes kept), not a list of arrays, which would read as several fields
            rows = np.empty(len(items), dtype=object)
            for i, item in enumerate(items):
                rows[i] = item
            return rows
        return items
    module = type(value).__module__
    if module.startswith("torch"):
        return value.detach().cpu().numpy()
    if module.startswith("tensorflow"):
        return value if type(value).__name__ == "RaggedTensor" else value.numpy()
    if isinstance(value, (bool, int, float)):
        try:
            return np.asarray(value, dtype=want)
        except (OverflowError, ValueError):
            return value  # e.g. an int beyond int64: the spec names it
    if isinstance(value, np.ndarray):
        return value if want is None or value.dtype == want or value.dtype.kind not in "biuf" else value.astype(want)
    if array_like(value):  # numpy scalars, PIL images
        return np.asarray(value)
    return value


def _field(feature: Any, key: Any) -> Any:
    return feature.get(key) if isinstance(feature, dict) else None


def _inner(feature: Any) -> Any:
    import datasets

    if isinstance(feature, (datasets.List, datasets.LargeList)) or type(feature).__name__ == "Sequence":
        return getattr(feature, "feature", None)
    return None


def _numeric_dtype(feature: Any) -> np.dtype | None:
    """The numpy dtype a feature declares for its numbers (lists unwrapped); None when it declares none."""
    import datasets

    if feature is None:
        return None
    while (inner := _inner(feature)) is not None:
        feature = inner
    if isinstance(feature, datasets.ClassLabel):
        return np.dtype(np.int64)
    dtype = getattr(feature, "dtype", None)
    if not isinstance(dtype, str) or isinstance(feature, dict):
        return None
    try:
        found = np.dtype(dtype)
    except TypeError:
        return None
    return found if found.kind in "biuf" else None


__all__ = ["MEMORY_FRACTION", "HFArraysSource", "HFBlockSource", "adapt", "dataset_source", "iterable_source",
           "memory_budget", "numpy_example"]  # fmt: skip

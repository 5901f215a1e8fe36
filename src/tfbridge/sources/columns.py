"""Columns from Arrow and polars: polars DataFrames, pyarrow Tables and RecordBatches, and the pandas columns with
Arrow or nullable ("Int64", "boolean", "string") dtypes (through ``arrays.dataframe_columns``).

Each becomes what a pandas DataFrame becomes: a dict of equally long numpy columns, keyed by column name, read by
:class:`ArraysSource`, one example per row. The conversion, by column type:

- integers, floats and booleans without nulls: their numpy dtype, without a copy where Arrow allows (fixed-width
  numbers in one chunk; booleans are bit-packed and always copied);
- strings and binary (also dictionary-encoded: categoricals, enums): object arrays of ``str`` / ``bytes``;
- fixed-size lists, and lists whose rows all have one length: an N-D array (``(rows, length, ...)``);
- lists of varying length (token ids, ...): an object array of per-row numpy arrays (ragged rows; a gathered
  row is dense);
- a null anywhere (in the column or inside its lists) is refused, naming the column and how many: a null is
  neither a number nor a NaN, and no value is guessed for it;
- dates, times, durations, structs, decimals and every other type are refused naming the column, with a hint.

pyarrow is imported only for Arrow data; polars columns of numbers and strings are read by polars itself, and
only list columns go through Arrow.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge._checks import short
from tfbridge.errors import SpecInferenceError, TfBridgeError
from tfbridge.sources.arrays import ArraysSource

if TYPE_CHECKING:
    from tfbridge.sources._base import Source


def adapt(obj: Any, batched: bool | None) -> Source | None:
    """The source of a polars DataFrame or a pyarrow Table / RecordBatch (one example per row); None for other
    objects of these libraries."""
    if _is(obj, "polars", "DataFrame"):
        return ArraysSource(obj, polars_columns(obj), bool(batched))
    if _is(obj, "pyarrow", "Table") or _is(obj, "pyarrow", "RecordBatch"):
        return ArraysSource(obj, arrow_columns(obj), bool(batched))
    if _is(obj, "polars", "LazyFrame"):
        msg = (
            "a polars LazyFrame is a query, not data: its rows exist only once it is collected.\n"
            "Hint: pass lazy_frame.collect(), the DataFrame it makes."
        )
        raise TfBridgeError(msg)
    return None


def _is(obj: Any, library: str, name: str) -> bool:
    return any(k.__module__.split(".")[0] == library and k.__name__ == name for k in type(obj).__mro__)


# -- messages ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Library:
    """How to say things to the users of one library: what the data is, and the code that fixes a column."""

    what: str  # "the polars DataFrame"
    fill: str  # code filling the nulls of column {c} with {v}
    fill_nan: str  # code turning the nulls of float column {c} into NaN
    cast_nan: str  # code making integer / boolean column {c} float, with NaN for the nulls
    fill_text: str  # code filling the nulls of text column {c} with ""
    drop_rows: str  # code dropping the rows where column {c} is null
    fill_inside: str  # code filling the nulls inside the lists of column {c} with 0 ("": no short way)
    to_numbers: str  # code turning temporal column {c} into numbers
    unnest: str  # code making one column of each field of struct column {c}
    to_float: str  # code casting (decimal) column {c} to float64

    def code(self, template: str, column: str, value: str = "0") -> str:
        return template.format(c=repr(column), v=value)


POLARS = Library(
    what="the polars DataFrame",
    fill="df.with_columns(pl.col({c}).fill_null({v}))",
    fill_nan="df.with_columns(pl.col({c}).fill_null(float('nan')))",
    cast_nan="df.with_columns(pl.col({c}).cast(pl.Float64).fill_null(float('nan')))",
    fill_text="df.with_columns(pl.col({c}).fill_null(''))",
    drop_rows="df.filter(pl.col({c}).is_not_null())",
    fill_inside="df.with_columns(pl.col({c}).list.eval(pl.element().fill_null(0)))",
    to_numbers="df.with_columns(pl.col({c}).dt.epoch('s')) for dates and times, "
    "pl.col({c}).dt.total_seconds() for durations, or pl.col({c}).cast(pl.String)",
    unnest="df.unnest({c}) makes one column of each of its fields",
    to_float="df.with_columns(pl.col({c}).cast(pl.Float64))",
)
ARROW = Library(
    what="the pyarrow table",
    fill="pc.fill_null(table[{c}], {v}) (import pyarrow.compute as pc; put it back with table.set_column)",
    fill_nan="pc.fill_null(table[{c}], float('nan')) (import pyarrow.compute as pc)",
    cast_nan="pc.fill_null(table[{c}].cast(pa.float64()), float('nan')) (import pyarrow.compute as pc)",
    fill_text="pc.fill_null(table[{c}], '') (import pyarrow.compute as pc)",
    drop_rows="table.filter(pc.is_valid(table[{c}])) (import pyarrow.compute as pc)",
    fill_inside="",
    to_numbers="table[{c}].cast(pa.int64()) or table[{c}].cast(pa.string())",
    unnest="table.flatten() makes one column of each of its fields",
    to_float="table[{c}].cast(pa.float64())",
)
PANDAS = Library(
    what="the pandas DataFrame",
    fill="df[{c}] = df[{c}].fillna({v})",
    fill_nan="df[{c}] = df[{c}].astype('float64')",
    cast_nan="df[{c}] = df[{c}].astype('float64')",
    fill_text="df[{c}] = df[{c}].fillna('')",
    drop_rows="df = df.dropna(subset=[{c}])",
    fill_inside="",
    to_numbers="df[{c}].astype('int64') or df[{c}].astype(str)",
    unnest="df[{c}].struct.explode() makes one column of each of its fields",
    to_float="df[{c}] = df[{c}].astype('float64')",
)


def _where(name: str) -> str:
    """The column's field path in the element, as every message names fields."""
    return f"x[{name!r}]"


def missing_values(
    lib: Library, name: str, missing: int, total: int, kind: str, inside: bool = False
) -> SpecInferenceError:
    """A column with ``missing`` nulls. ``kind``: "integer", "bool", "float", "text", "list", "category" (pandas)
    or "other"; ``inside``: the nulls are values inside the column's lists."""
    values = "value (a null)" if missing == 1 else "values (nulls)"
    if kind == "list" and not inside:
        what = f"{missing} missing {'list (a null row)' if missing == 1 else 'lists (null rows)'} in {total} rows"
        hint = f"drop or fill those rows first, e.g. {lib.code(lib.drop_rows, name)}."
    elif inside:
        what = f"{missing} missing {values} inside its lists ({total} values)"
        fill = f", e.g. {lib.code(lib.fill_inside, name)}" if lib.fill_inside else " where the lists are made"
        hint = f"fill them with the value they stand for{fill}, or drop the rows that hold them."
    else:
        what = f"{missing} missing {values} in {total} rows"
        fill = lib.code(lib.fill, name, _FILL_VALUES.get(kind, "0"))
        if kind == "text":
            hint = (
                f"fill them first, e.g. {lib.code(lib.fill_text, name)}, or drop those rows: "
                f"{lib.code(lib.drop_rows, name)}."
            )
        elif kind == "float":
            hint = (
                f"fill them first, e.g. {fill}; or, if NaN is what you want, fill them with NaN yourself: "
                f"{lib.code(lib.fill_nan, name)}."
            )
        elif kind == "category":  # pandas: a fill value must be one of the categories
            hint = (
                f"fill them with a category of their own, e.g. df[{name!r}] = df[{name!r}].cat.add_categories("
                f"['missing']).fillna('missing'), or drop those rows: {lib.code(lib.drop_rows, name)}."
            )
        elif kind in ("integer", "bool"):
            hint = (
                f"fill them first, e.g. {fill}; or, if NaN is what you want, cast the column to float and fill "
                f"them with NaN yourself: {lib.code(lib.cast_nan, name)}."
            )
        else:
            hint = f"fill them first, or drop those rows: {lib.code(lib.drop_rows, name)}."
    why = f": {_WHY[kind]}" if kind in _WHY and not inside else ""
    msg = (
        f"column {_where(name)} of {lib.what} has {what}. tfbridge does not turn nulls into NaN or any other "
        f"value{why}.\nHint: {hint}"
    )
    return SpecInferenceError(msg, path=_where(name))


_FILL_VALUES = {"integer": "0", "float": "0.0", "bool": "False"}
_WHY = {
    "integer": "a null is not a number",
    "float": "a null is not a NaN",
    "bool": "a null is neither True nor False",
    "text": "a null is not a string",
}


def _all_null(lib: Library, name: str, total: int) -> SpecInferenceError:
    msg = (
        f"column {_where(name)} of {lib.what} has type null: all {total} of its values are missing, so it has no "
        "dtype and no values.\nHint: drop the column, or give it values of a type."
    )
    return SpecInferenceError(msg, path=_where(name))


def unsupported_type(lib: Library, name: str, type_name: str, category: str) -> SpecInferenceError:
    """A column of a type with no tensor form. ``category``: "temporal", "struct", "decimal" or anything else."""
    if category == "temporal":
        hint = f"convert it to numbers or strings first, e.g. {lib.code(lib.to_numbers, name)}."
    elif category == "struct":
        hint = f"give each field a column of its own: {lib.code(lib.unnest, name)}."
    elif category == "decimal":
        hint = f"cast it to float first, e.g. {lib.code(lib.to_float, name)}."
    else:
        hint = "convert such columns to numbers, strings, or lists of them first."
    msg = f"column {_where(name)} of {lib.what} has type {type_name}, which has no TensorFlow equivalent.\nHint: {hint}"
    return SpecInferenceError(msg, path=_where(name))


def check_column_names(lib: Library, names: list[Any]) -> None:
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        msg = (
            f"column names of {lib.what} must be strings to become dict keys. Received: {short(bad[0])}\n"
            "Hint: rename the columns, e.g. df.columns = [str(c) for c in df.columns]."
        )
        raise TfBridgeError(msg)
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
    if dupes:
        msg = (
            f"{lib.what} has more than one column named {dupes[0]!r}; each column becomes one dict key.\n"
            "Hint: rename or drop the duplicate columns."
        )
        raise TfBridgeError(msg)


# -- polars ---------------------------------------------------------------------------------------------------


def polars_columns(df: Any) -> dict[str, np.ndarray]:
    """Every column of a polars DataFrame as a numpy column (see the module docstring)."""
    names = list(df.columns)
    check_column_names(POLARS, names)
    return {name: _polars_column(df.get_column(name), name) for name in names}


_POLARS_INTEGERS = ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64")  # numpy has these


def _polars_column(series: Any, name: str) -> np.ndarray:
    pl = sys.modules["polars"]
    dtype = series.dtype
    base = dtype.base_type()
    if base in (pl.List, pl.Array):  # nested: read through Arrow, which gives the flat values and row offsets
        return _polars_nested(series, name)
    if dtype.is_integer() or dtype.is_float():
        kind = "float" if dtype.is_float() else "integer"
    elif base == pl.Boolean:
        kind = "bool"
    elif base in (pl.String, pl.Binary, pl.Categorical, pl.Enum):
        kind = "text"
    elif base == pl.Null:
        raise _all_null(POLARS, name, len(series))
    else:
        raise unsupported_type(POLARS, name, str(dtype), _polars_category(pl, dtype))
    if kind == "integer" and str(base) not in _POLARS_INTEGERS:
        raise unsupported_type(POLARS, name, str(dtype), "other")  # Int128 and others numpy does not have
    missing = int(series.null_count())
    if missing:
        raise missing_values(POLARS, name, missing, len(series), kind)
    if kind == "text":
        values: np.ndarray = series.to_numpy()
        return values if values.dtype == object else values.astype(object)
    try:
        return series.to_numpy(allow_copy=False)  # type: ignore[no-any-return]  # fixed-width numbers: a view
    except RuntimeError:  # booleans are bit-packed; a column in several chunks: one copy
        return series.to_numpy()  # type: ignore[no-any-return]


def _polars_category(pl: Any, dtype: Any) -> str:
    if dtype.is_temporal():
        return "temporal"
    if dtype.base_type() == pl.Struct:
        return "struct"
    if dtype.is_decimal():
        return "decimal"
    return "other"


def _polars_nested(series: Any, name: str) -> np.ndarray:
    try:
        arrow = series.to_arrow()
    except ModuleNotFoundError as exc:
        msg = (
            f"column {_where(name)} of {POLARS.what} holds lists ({series.dtype}); tfbridge reads list columns "
            "through pyarrow, which is not installed.\n"
            'Hint: pip install pyarrow (or "tfbridge[arrow]").'
        )
        raise TfBridgeError(msg) from exc
    return _arrow_column(arrow, name, POLARS)


# -- Arrow ----------------------------------------------------------------------------------------------------


def arrow_columns(table: Any) -> dict[str, np.ndarray]:
    """Every column of a pyarrow Table or RecordBatch as a numpy column (see the module docstring)."""
    names = list(table.column_names)
    check_column_names(ARROW, names)
    return {name: _arrow_column(table.column(i), name, ARROW) for i, name in enumerate(names)}


def _arrow_column(column: Any, name: str, lib: Library) -> np.ndarray:
    """A pyarrow Array or ChunkedArray as one numpy column."""
    pa = sys.modules["pyarrow"]
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            column = column.chunk(0)
        elif column.num_chunks == 0:
            column = pa.array([], type=column.type)
        else:
            column = column.combine_chunks()  # the one copy a column in several chunks needs
    values, _ = _Arrow(pa, name, lib).convert(column, top=True)
    return values


class _Arrow:
    """The conversion of one column, level by level into its lists."""

    def __init__(self, pa: Any, name: str, lib: Library) -> None:
        self.pa, self.name, self.lib = pa, name, lib

    def convert(self, array: Any, top: bool) -> tuple[np.ndarray, bool]:
        """``(values, rows)``: ``values`` has one entry per element of ``array``; ``rows`` is True when they are
        per-row arrays (an object array of ragged rows), False when ``values`` is a dense array (numbers, or an
        object array of str/bytes)."""
        pa, t = self.pa, array.type
        types = pa.types
        if types.is_dictionary(t):  # categoricals: the values they stand for
            self._nulls(array, self._kind(t.value_type), top)
            return self.convert(array.dictionary_decode(), top)
        if isinstance(t, pa.BaseExtensionType):
            if isinstance(t, pa.FixedShapeTensorType):  # (rows, *shape) numbers
                self._nulls(array, "list", top)
                return array.to_numpy_ndarray(), False
            raise unsupported_type(self.lib, self.name, f"{t} (an Arrow extension type)", "other")
        kind = self._kind(t)
        if kind in ("integer", "float"):
            self._nulls(array, kind, top)
            return array.to_numpy(zero_copy_only=True), False  # fixed width, no nulls: a view of Arrow's buffer
        if kind in ("bool", "text"):
            self._nulls(array, kind, top)
            values = array.to_numpy(zero_copy_only=False)
            return (values if values.dtype == object else values.astype(object)) if kind == "text" else values, False
        if kind == "list":
            self._nulls(array, kind, top)
            return self._list(array)
        if types.is_null(t):
            if top:
                raise _all_null(self.lib, self.name, len(array))
            raise missing_values(self.lib, self.name, len(array), len(array), "other", inside=True)
        raise unsupported_type(self.lib, self.name, str(t), _arrow_category(pa, t))

    def _kind(self, t: Any) -> str:
        types = self.pa.types
        if types.is_integer(t):
            return "integer"
        if types.is_floating(t):
            return "float"
        if types.is_boolean(t):
            return "bool"
        text = (
            types.is_string(t)
            or types.is_large_string(t)
            or types.is_binary(t)
            or types.is_large_binary(t)
            or types.is_fixed_size_binary(t)
            or types.is_string_view(t)
            or types.is_binary_view(t)
        )
        if text:
            return "text"
        lists = (
            types.is_list(t)
            or types.is_large_list(t)
            or types.is_fixed_size_list(t)
            or types.is_list_view(t)
            or types.is_large_list_view(t)
        )
        if lists:
            return "list"
        return "other"

    def _nulls(self, array: Any, kind: str, top: bool) -> None:
        missing = int(array.null_count)
        if missing:
            raise missing_values(self.lib, self.name, missing, len(array), kind, inside=not top)

    def _list(self, array: Any) -> tuple[np.ndarray, bool]:
        pa = self.pa
        t = array.type
        n = len(array)
        inner, rows = self.convert(array.flatten(), top=False)  # the values of the rows, in row order
        if pa.types.is_fixed_size_list(t):
            if not rows:
                return inner.reshape((n, t.list_size, *inner.shape[1:])), False
            offsets = np.arange(n + 1, dtype=np.int64) * t.list_size
        else:
            # (list views may overlap and lie in any order: their lengths, not their offsets, give the rows)
            lengths: np.ndarray = np.asarray(array.value_lengths(), dtype=np.int64)
            if not rows and n and (lengths == lengths[0]).all():  # every row one length: a dense column
                return inner.reshape((n, int(lengths[0]), *inner.shape[1:])), False
            offsets = np.concatenate([[0], np.cumsum(lengths)])
        empty = np.empty((0, *self._value_shape(t.value_type)), dtype=self._numpy_dtype(t)) if rows else None
        return _split(inner, offsets, empty), True

    def _value_shape(self, t: Any) -> tuple[int, ...]:
        """The shape of one value of type ``t``, 0 where it varies: what an empty row holds no rows of."""
        types = self.pa.types
        if types.is_dictionary(t):
            return self._value_shape(t.value_type)
        if isinstance(t, self.pa.FixedShapeTensorType):
            return tuple(t.shape)
        if types.is_fixed_size_list(t):
            return (t.list_size, *self._value_shape(t.value_type))
        if self._kind(t) == "list":
            return (0, *self._value_shape(t.value_type))
        return ()

    def _numpy_dtype(self, t: Any) -> np.dtype:
        """The numpy dtype of the values at the bottom of list type ``t`` (text: short str, which numpy keeps
        as a dense array of no elements)."""
        while self._kind(t) == "list" or self.pa.types.is_dictionary(t):
            t = t.value_type
        if isinstance(t, self.pa.BaseExtensionType):
            t = t.storage_type.value_type
        if self._kind(t) == "text":
            return np.dtype("U1")
        found: np.dtype = np.dtype(t.to_pandas_dtype())
        return found


def _split(inner: np.ndarray, offsets: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
    """An object array of ``inner[offsets[i]:offsets[i + 1]]`` (views, no copy). ``empty`` stands for an empty
    row when ``inner`` holds rows itself (an empty slice of those would lose their dimensions)."""
    n = len(offsets) - 1
    out = np.empty(n, dtype=object)
    bounds = offsets.tolist()
    for i in range(n):
        a, b = bounds[i], bounds[i + 1]
        out[i] = empty if empty is not None and a == b else inner[a:b]
    return out


def _arrow_category(pa: Any, t: Any) -> str:
    types = pa.types
    if types.is_temporal(t):  # dates, times, timestamps, durations
        return "temporal"
    if types.is_interval(t):
        return "temporal"
    if types.is_struct(t):
        return "struct"
    if types.is_decimal(t):
        return "decimal"
    return "other"


# -- pandas ---------------------------------------------------------------------------------------------------


def pandas_column(series: Any, name: str) -> np.ndarray:
    """A pandas column with an extension dtype (Arrow-backed, nullable, categorical, ...) as a numpy column,
    missing values refused as for Arrow. Columns of plain numpy dtypes do not come here."""
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_column(series.array.__arrow_array__(), name, PANDAS)
    if isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype, pd.IntervalDtype)):
        raise unsupported_type(PANDAS, name, str(dtype), "temporal")
    if isinstance(dtype, pd.SparseDtype):
        return series.to_numpy()  # type: ignore[no-any-return]  # dense, with its fill value where nothing is stored
    kind = _pandas_kind(pd, dtype)
    missing = int(series.isna().sum())
    if missing:
        shown = "category" if isinstance(dtype, pd.CategoricalDtype) else kind
        raise missing_values(PANDAS, name, missing, len(series), shown)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # the masked dtypes: Int64, Float64, boolean
    if kind in ("integer", "float", "bool") and isinstance(numpy_dtype, np.dtype):
        return series.to_numpy(dtype=numpy_dtype)  # type: ignore[no-any-return]
    if kind == "text":
        return series.to_numpy(dtype=object)  # type: ignore[no-any-return]
    return series.to_numpy()  # type: ignore[no-any-return]


def _pandas_kind(pd: Any, dtype: Any) -> str:
    api = pd.api.types
    if isinstance(dtype, pd.CategoricalDtype):
        return _pandas_kind(pd, dtype.categories.dtype)
    if api.is_bool_dtype(dtype):
        return "bool"
    if api.is_integer_dtype(dtype):
        return "integer"
    if api.is_float_dtype(dtype):
        return "float"
    if api.is_string_dtype(dtype):
        return "text"
    return "other"

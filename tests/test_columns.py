"""Column sources with the real libraries: polars DataFrames, pyarrow Tables and RecordBatches, and pandas
DataFrames with Arrow and nullable dtypes, read as pandas DataFrames are (one example per row, a dict of columns
keyed by name)."""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge.sources import ArraysSource, adapt

pytestmark = pytest.mark.timeout(180)

N = 10
AGE = [20.5 + i for i in range(N)]
VISITS = [i * 3 for i in range(N)]
FLAG = [i % 3 == 0 for i in range(N)]
CITY = [f"city-{'é' * (i % 3)}{i}" for i in range(N)]
BLOB = [bytes([i, 0, 255]) for i in range(N)]
TOKENS = [list(range(i, i + i % 4)) for i in range(N)]  # 0 to 3 tokens: ragged rows, some empty
PAIR = [[float(i), -float(i)] for i in range(N)]
Y = [i % 2 for i in range(N)]


def _arrow_table() -> pa.Table:
    return pa.table(
        {
            "age": pa.array(AGE, pa.float64()),
            "visits": pa.array(VISITS, pa.int32()),
            "flag": pa.array(FLAG, pa.bool_()),
            "city": pa.array(CITY, pa.string()),
            "blob": pa.array(BLOB, pa.binary()),
            "tokens": pa.array(TOKENS, pa.list_(pa.int64())),
            "pair": pa.array(PAIR, pa.list_(pa.float32(), 2)),
            "y": pa.array(Y, pa.int64()),
        }
    )


def _polars() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "age": pl.Series(AGE, dtype=pl.Float64),
            "visits": pl.Series(VISITS, dtype=pl.Int32),
            "flag": FLAG,
            "city": CITY,
            "blob": BLOB,
            "tokens": pl.Series(TOKENS, dtype=pl.List(pl.Int64)),
            "pair": pl.Series(PAIR, dtype=pl.Array(pl.Float32, 2)),
            "y": pl.Series(Y, dtype=pl.Int64),
        }
    )


def _pandas_arrow() -> pd.DataFrame:
    """pandas with Arrow and nullable dtypes, no value missing."""
    return pd.DataFrame(
        {
            "age": pd.array(AGE, dtype="Float64"),
            "visits": pd.array(VISITS, dtype=pd.ArrowDtype(pa.int32())),
            "flag": pd.array(FLAG, dtype="boolean"),
            "city": pd.array(CITY, dtype="string[pyarrow]"),
            "blob": pd.array(BLOB, dtype=pd.ArrowDtype(pa.binary())),
            "tokens": pd.array(TOKENS, dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
            "pair": pd.array(PAIR, dtype=pd.ArrowDtype(pa.list_(pa.float32(), 2))),
            "y": pd.array(Y, dtype="Int64"),
        }
    )


SOURCES = {
    "polars": _polars,
    "arrow-table": _arrow_table,
    "arrow-batch": lambda: _arrow_table().to_batches()[0],
    "arrow-chunked": lambda: pa.concat_tables([_arrow_table().slice(0, 4), _arrow_table().slice(4)]),
    "polars-chunked": lambda: pl.concat([_polars()[:4], _polars()[4:]], rechunk=False),
    "pandas-arrow": _pandas_arrow,
}


@pytest.fixture(params=list(SOURCES))
def source(request: pytest.FixtureRequest) -> Any:
    return SOURCES[request.param]()


def _row(i: int) -> dict[str, Any]:
    return {
        "age": AGE[i],
        "visits": VISITS[i],
        "flag": FLAG[i],
        "city": CITY[i].encode(),
        "blob": BLOB[i],
        "tokens": TOKENS[i],
        "pair": PAIR[i],
        "y": Y[i],
    }


def _plain(element: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in element.items():
        v = value.numpy()
        out[key] = v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v
    return out


# -- what a table gives ------------------------------------------------------------------------------------------


def test_a_table_is_a_source_of_one_example_per_row(source: Any) -> None:
    src = adapt(source)
    assert isinstance(src, ArraysSource) and src.length() == N and not src.batched
    spec = tb.infer_spec(source)
    assert not spec.batched
    assert spec.signature == {
        "age": tf.TensorSpec((), tf.float64),  # the data as it is
        "visits": tf.TensorSpec((), tf.int32),
        "flag": tf.TensorSpec((), tf.bool),
        "city": tf.TensorSpec((), tf.string),
        "blob": tf.TensorSpec((), tf.string),
        "tokens": tf.TensorSpec((None,), tf.int64),
        "pair": tf.TensorSpec((2,), tf.float32),
        "y": tf.TensorSpec((), tf.int64),
    }


def test_keras_inputs_are_named_by_column_with_the_float_policy(source: Any) -> None:
    inputs = tb.keras_inputs(source, label="y")
    assert sorted(inputs) == ["age", "blob", "city", "flag", "pair", "tokens", "visits"]
    got = {name: (tuple(t.shape), t.dtype, t.name) for name, t in inputs.items()}
    assert got == {
        "age": ((None,), "float32", "age"),  # float64 -> keras floatx
        "visits": ((None,), "int32", "visits"),
        "flag": ((None,), "bool", "flag"),
        "city": ((None,), "string", "city"),
        "blob": ((None,), "string", "blob"),
        "tokens": ((None, None), "int64", "tokens"),
        "pair": ((None, 2), "float32", "pair"),
    }


def test_one_epoch_gives_every_row_once_in_order_with_its_values(source: Any) -> None:
    ds = tb.to_dataset(source)
    assert ds.element_spec["age"] == tf.TensorSpec((), tf.float32)
    rows = [_plain(e) for e in ds]
    assert len(rows) == N
    for i, row in enumerate(rows):
        assert _close(row, _row(i)), (i, row)
    assert [_plain(e)["y"] for e in ds] == Y  # and again, the next epoch


def _close(got: dict[str, Any], want: dict[str, Any]) -> bool:
    assert set(got) == set(want)
    for key, value in want.items():
        if key in ("age", "pair"):
            np.testing.assert_allclose(got[key], value, rtol=1e-6)
        else:
            assert got[key] == value, key
    return True


def test_shuffle_with_a_seed_gives_a_permutation_each_epoch(source: Any) -> None:
    ds = tb.to_dataset(source, shuffle=True, seed=7)
    first = [_plain(e)["visits"] for e in ds]
    second = [_plain(e)["visits"] for e in ds]
    assert sorted(first) == sorted(second) == VISITS
    assert first != VISITS or second != VISITS
    for e in ds:  # every row keeps its own values together
        row = _plain(e)
        assert _close(row, _row(VISITS.index(row["visits"])))


def test_label_splits_a_column_off_and_batches(source: Any) -> None:
    ds = tb.pad_batch(source, 4, label="y")
    features, labels = ds.element_spec
    assert "y" not in features and labels == tf.TensorSpec((None,), tf.int64)
    batches = list(ds)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert [int(v) for _, y in batches for v in y] == Y
    tokens = batches[0][0]["tokens"].numpy().tolist()
    assert tokens == [[0, 0, 0], [1, 0, 0], [2, 3, 0], [3, 4, 5]]  # each row padded to the longest of its batch
    assert batches[2][0]["city"].numpy().tolist() == [c.encode() for c in CITY[8:]]


def test_label_with_batch_size_on_dense_columns() -> None:
    df = _polars().drop("tokens")
    ds = tb.to_dataset(df, label="y", batch_size=4)
    features, labels = ds.element_spec
    assert isinstance(features, dict) and "y" not in features
    assert labels == tf.TensorSpec((None,), tf.int64)
    assert features["pair"] == tf.TensorSpec((None, 2), tf.float32)
    got = list(ds)
    assert [int(v) for _, y in got for v in y] == Y
    assert got[0][0]["visits"].numpy().tolist() == VISITS[:4]
    label_list = tb.to_dataset(df, label=["y", "flag"], batch_size=4).element_spec[1]
    assert set(label_list) == {"y", "flag"}


def test_validate_and_inspect_read_a_table(source: Any) -> None:
    if isinstance(source, pd.DataFrame):
        dense = source.drop(columns="tokens")
    else:
        dense = source.drop(["tokens"]) if isinstance(source, pl.DataFrame) else source.drop_columns(["tokens"])
    assert tb.validate(dense) == N
    assert tb.to_dataset(dense, validate="all").cardinality() == N
    report = tb.inspect(source, label="y")
    assert "x['tokens']" in str(report) and "string" in str(report)


def test_validate_reads_a_list_column_of_ragged_rows() -> None:
    assert tb.validate(_arrow_table()) == N


# -- conversion ------------------------------------------------------------------------------------------------


def test_numeric_columns_without_nulls_are_not_copied() -> None:
    table = _arrow_table()
    columns = adapt(table).columns
    for name in ("age", "visits", "y"):
        buffer = table.column(name).chunk(0).buffers()[1]
        assert columns[name].ctypes.data == buffer.address, name
    sliced = adapt(table.slice(3, 4)).columns["visits"]  # an offset into the same buffer
    assert sliced.tolist() == VISITS[3:7]
    assert np.shares_memory(sliced, columns["visits"])
    df = _polars()
    assert np.shares_memory(adapt(df).columns["age"], df["age"].to_numpy())
    assert adapt(df).columns["pair"].shape == (N, 2)


def test_column_forms() -> None:
    columns = adapt(_polars()).columns
    assert columns["city"].dtype == object and columns["city"].tolist() == CITY  # str objects, as pandas gives
    assert columns["blob"].dtype == object and columns["blob"].tolist() == BLOB
    assert columns["tokens"].dtype == object
    assert [row.tolist() for row in columns["tokens"]] == TOKENS
    assert all(isinstance(row, np.ndarray) and row.dtype == np.int64 for row in columns["tokens"])
    assert columns["flag"].dtype == np.bool_ and columns["age"].dtype == np.float64
    pandas = adapt(_pandas_arrow()).columns
    assert pandas["y"].dtype == np.int64 and pandas["flag"].dtype == np.bool_ and pandas["age"].dtype == np.float64
    assert pandas["city"].dtype == object and pandas["city"].tolist() == CITY
    assert [row.tolist() for row in pandas["tokens"]] == TOKENS


def test_lists_of_one_length_are_a_dense_column_and_nested_lists_keep_their_rows() -> None:
    table = pa.table(
        {
            "same": pa.array([[1, 2, 3]] * 4, pa.list_(pa.int16())),
            "nested": pa.array([[[1], [2, 3]], [[4]], [], [[5, 6, 7]]], pa.list_(pa.list_(pa.int64()))),
            "words": pa.array([["a"], ["b", "c"], [], ["d"]], pa.large_list(pa.large_string())),
            "points": pa.array([[[0, 1]], [[2, 3], [4, 5]], [], [[6, 7]]], pa.list_(pa.list_(pa.float32(), 2))),
            "grid": pl.Series([[[1, 2], [3, 4]]] * 4, dtype=pl.Array(pl.Int8, (2, 2))).to_arrow(),
            "kind": pa.array(["u", "v", "u", "w"]).dictionary_encode(),
            "view": pa.array([[1], [2, 3], [], [4]], pa.list_view(pa.int32())),
        }
    )
    assert adapt(table).columns["same"].shape == (4, 3)
    spec = tb.infer_spec(table)
    assert spec.signature["same"] == tf.TensorSpec((3,), tf.int16)
    assert spec.signature["nested"] == tf.RaggedTensorSpec((None, None), tf.int64, ragged_rank=1)
    assert spec.signature["words"] == tf.TensorSpec((None,), tf.string)
    assert spec.signature["points"] == tf.TensorSpec((None, 2), tf.float32)
    assert spec.signature["grid"] == tf.TensorSpec((2, 2), tf.int8)
    assert spec.signature["kind"] == tf.TensorSpec((), tf.string)
    rows = list(tb.to_dataset(table))
    assert [r["nested"].to_list() for r in rows] == [[[1], [2, 3]], [[4]], [], [[5, 6, 7]]]
    assert [r["words"].numpy().tolist() for r in rows] == [[b"a"], [b"b", b"c"], [], [b"d"]]
    assert [r["points"].numpy().tolist() for r in rows] == [[[0, 1]], [[2, 3], [4, 5]], [], [[6, 7]]]
    assert [r["kind"].numpy() for r in rows] == [b"u", b"v", b"u", b"w"]
    assert rows[0]["grid"].numpy().tolist() == [[1, 2], [3, 4]]
    assert [r["view"].numpy().tolist() for r in rows] == [[1], [2, 3], [], [4]]


def test_a_sliced_list_column_reads_its_own_rows() -> None:
    table = pa.table({"tokens": pa.array(TOKENS, pa.list_(pa.int64())), "y": Y}).slice(5, 4)
    rows = list(tb.to_dataset(table))
    assert [r["tokens"].numpy().tolist() for r in rows] == TOKENS[5:9]
    assert [int(r["y"]) for r in rows] == Y[5:9]


def test_columns_of_a_nullable_type_without_nulls_have_their_plain_dtype() -> None:
    df = pl.DataFrame({"a": pl.Series([1, 2], dtype=pl.Int16)})  # every polars column is nullable
    assert adapt(df).columns["a"].dtype == np.int16
    frame = pd.DataFrame({"a": pd.array([1, 2], dtype="Int8"), "b": pd.array([True, False], dtype="boolean")})
    assert tb.infer_spec(frame).signature == {"a": tf.TensorSpec((), tf.int8), "b": tf.TensorSpec((), tf.bool)}


def test_a_float_nan_is_a_value_not_a_null() -> None:
    df = pl.DataFrame({"a": [1.0, float("nan")]})
    values = [float(e["a"]) for e in tb.to_dataset(df)]
    assert values[0] == 1.0 and np.isnan(values[1])


# -- errors ----------------------------------------------------------------------------------------------------

NULL_INT = "column x['n'] of the {what} has 2 missing values (nulls) in 3 rows. tfbridge does not turn nulls into "


@pytest.mark.parametrize(
    ("data", "what", "fix"),
    [
        (
            pl.DataFrame({"n": [1, None, None], "ok": [1, 2, 3]}),
            "polars DataFrame",
            "df.with_columns(pl.col('n').fill_null(0)); or, if NaN is what you want, cast the column to float and "
            "fill them with NaN yourself: df.with_columns(pl.col('n').cast(pl.Float64).fill_null(float('nan')))",
        ),
        (
            pa.table({"n": pa.array([1, None, None], pa.int32()), "ok": [1, 2, 3]}),
            "pyarrow table",
            "pc.fill_null(table['n'], 0)",
        ),
        (
            pd.DataFrame({"n": pd.array([1, None, None], dtype="Int64"), "ok": [1, 2, 3]}),
            "pandas DataFrame",
            "df['n'] = df['n'].fillna(0); or, if NaN is what you want, cast the column to float and fill them with "
            "NaN yourself: df['n'] = df['n'].astype('float64')",
        ),
        (
            pd.DataFrame({"n": pd.array([1, None, None], dtype=pd.ArrowDtype(pa.int64())), "ok": [1, 2, 3]}),
            "pandas DataFrame",
            "df['n'] = df['n'].fillna(0)",
        ),
    ],
    ids=["polars", "arrow", "pandas-Int64", "pandas-arrow"],
)
def test_a_nullable_integer_column_with_missing_values_is_refused_never_made_nan(
    data: Any, what: str, fix: str
) -> None:
    for call in (tb.infer_spec, tb.to_dataset, tb.keras_inputs):
        with pytest.raises(tb.SpecInferenceError) as info:
            call(data)
        message = str(info.value)
        assert message.startswith(NULL_INT.format(what=what)), message
        assert "a null is not a number.\nHint: fill them first, e.g. " + fix in message
        assert info.value.path == "x['n']"


def test_nulls_in_bool_float_text_and_list_columns_are_refused_too() -> None:
    cases = {
        "flag": (pl.DataFrame({"flag": [True, None]}), "1 missing value (a null) in 2 rows", "fill_null(False)"),
        "f": (pl.DataFrame({"f": [1.0, None]}), "a null is not a NaN", "pl.col('f').fill_null(float('nan'))"),
        "s": (pa.table({"s": ["a", None]}), "a null is not a string", "pc.fill_null(table['s'], '')"),
        "l": (pl.DataFrame({"l": [[1], None]}), "1 missing list (a null row) in 2 rows", "is_not_null()"),
        "li": (
            pl.DataFrame({"li": [[1, None], [2]]}),
            "1 missing value (a null) inside its lists (3 values)",
            "pl.col('li').list.eval(pl.element().fill_null(0))",
        ),
        "b": (
            pd.DataFrame({"b": pd.array([True, None], dtype="boolean")}),
            "a null is neither True nor False",
            "df['b'].fillna(False)",
        ),
        "ff": (
            pd.DataFrame({"ff": pd.array([1.5, None], dtype="Float64")}),
            "a null is not a NaN",
            "df['ff'] = df['ff'].astype('float64')",
        ),
        "st": (
            pd.DataFrame({"st": pd.array(["a", None], dtype="string[pyarrow]")}),
            "a null is not a string",
            "df['st'].fillna('')",
        ),
        "o": (pd.DataFrame({"o": np.array(["a", None], dtype=object)}), "a null is not a string", "dropna"),
        "z": (pl.DataFrame({"z": [None, None]}), "has type null: all 2 of its values are missing", "drop the column"),
    }
    for name, (data, what, fix) in cases.items():
        with pytest.raises(tb.SpecInferenceError) as info:
            tb.infer_spec(data)
        message = str(info.value)
        assert message.startswith(f"column x[{name!r}] of the "), message
        assert what in message and fix in message.split("\nHint: ")[1], message
        assert info.value.path == f"x[{name!r}]"


@pytest.mark.parametrize(
    ("data", "first_line", "hint"),
    [
        (
            pl.DataFrame({"when": [datetime.date(2024, 1, 1)], "y": [1]}),
            "column x['when'] of the polars DataFrame has type Date, which has no TensorFlow equivalent.",
            "Hint: convert it to numbers or strings first, e.g. df.with_columns(pl.col('when').dt.epoch('s'))",
        ),
        (
            pa.table({"when": pa.array([datetime.datetime(2024, 1, 1)], pa.timestamp("us")), "y": [1]}),
            "column x['when'] of the pyarrow table has type timestamp[us], which has no TensorFlow equivalent.",
            "Hint: convert it to numbers or strings first, e.g. table['when'].cast(pa.int64())",
        ),
        (
            pd.DataFrame({"when": pd.to_datetime(["2024-01-01"]), "y": [1]}),
            "column x['when'] of the pandas DataFrame has type datetime64[us], which has no TensorFlow equivalent.",
            "Hint: convert it to numbers or strings first, e.g. df['when'].astype('int64')",
        ),
        (
            pl.DataFrame({"s": [{"a": 1, "b": 2.0}], "y": [1]}),
            "column x['s'] of the polars DataFrame has type Struct({'a': Int64, 'b': Float64}), which has no "
            "TensorFlow equivalent.",
            "Hint: give each field a column of its own: df.unnest('s') makes one column of each of its fields.",
        ),
        (
            pa.table({"s": [{"a": 1}], "y": [1]}),
            "column x['s'] of the pyarrow table has type struct<a: int64>, which has no TensorFlow equivalent.",
            "Hint: give each field a column of its own: table.flatten() makes one column of each of its fields.",
        ),
        (
            pl.DataFrame({"d": pl.Series([decimal.Decimal("1.5")]), "y": [1]}),
            "column x['d'] of the polars DataFrame has type Decimal(precision=38, scale=1), which has no "
            "TensorFlow equivalent.",
            "Hint: cast it to float first, e.g. df.with_columns(pl.col('d').cast(pl.Float64)).",
        ),
        (
            pa.table({"m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())), "y": [1]}),
            "column x['m'] of the pyarrow table has type map<string, int64>, which has no TensorFlow equivalent.",
            "Hint: convert such columns to numbers, strings, or lists of them first.",
        ),
    ],
    ids=["polars-date", "arrow-timestamp", "pandas-datetime", "polars-struct", "arrow-struct", "decimal", "map"],
)
def test_columns_of_types_without_a_tensor_are_named_with_a_hint(data: Any, first_line: str, hint: str) -> None:
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(data)
    line, rest = str(info.value).split("\n", 1)
    assert line == first_line
    assert rest.startswith(hint)
    assert info.value.path == first_line.split()[1]


def test_column_names_must_be_strings_each_used_once() -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.infer_spec(pd.DataFrame({0: [1.0], "b": [2.0]}))
    assert str(info.value) == (
        "column names of the pandas DataFrame must be strings to become dict keys. Received: 0\n"
        "Hint: rename the columns, e.g. df.columns = [str(c) for c in df.columns]."
    )
    with pytest.raises(tb.TfBridgeError, match=r"must be strings to become dict keys. Received: \('a', 'x'\)"):
        tb.to_dataset(pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])))
    duplicated = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"])
    with pytest.raises(tb.TfBridgeError) as info:
        tb.infer_spec(duplicated)
    assert str(info.value) == (
        "the pyarrow table has more than one column named 'x'; each column becomes one dict key.\n"
        "Hint: rename or drop the duplicate columns."
    )
    with pytest.raises(tb.TfBridgeError, match="the pandas DataFrame has more than one column named 'a'"):
        tb.infer_spec(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_a_lazy_frame_is_refused_with_the_way_to_collect_it() -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.infer_spec(_polars().lazy())
    assert str(info.value).endswith("Hint: pass lazy_frame.collect(), the DataFrame it makes.")


def test_an_empty_table_says_it_is_empty() -> None:
    with pytest.raises(tb.SpecInferenceError, match=r"empty \(0 rows\)"):
        tb.infer_spec(_arrow_table().slice(0, 0))


_WITHOUT_PYARROW = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
import polars as pl
import tfbridge as tb
from tfbridge.sources import adapt

columns = adapt(pl.DataFrame({"a": [1, 2], "s": ["x", "y"], "b": [True, False]})).columns
assert {k: v.dtype.kind for k, v in columns.items()} == {"a": "i", "s": "O", "b": "b"}, columns
try:
    adapt(pl.DataFrame({"l": [[1], [2, 3]]}))
except tb.TfBridgeError as err:
    print(err)
assert "pyarrow" not in sys.modules
"""


def test_polars_without_pyarrow_reads_flat_columns_and_asks_for_pyarrow_for_lists() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_PYARROW], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(
        "tfbridge reads list columns through pyarrow, which is not installed.\n"
        'Hint: pip install pyarrow (or "tfbridge[arrow]").'
    )

"""Every kind of source through one shared test (spec, keras inputs, and exactly-once ordered delivery), then
what is particular to some kinds: one-shot iterators peeked and validated without losing elements, DataFrames
(columns, labels, token lists), map-style datasets of single examples, batched numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfbridge as tb

N_ROWS = 23
BATCH = 5  # 23 rows -> 4 batches of 5 and a short last batch of 3


def _rows() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N_ROWS * 3, dtype=np.float64).reshape(N_ROWS, 3)
    y = np.arange(N_ROWS, dtype=np.int64)
    return x, y


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = _rows()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, N_ROWS, BATCH)]


class BatchSequence(keras.utils.PyDataset):
    def __init__(self) -> None:
        super().__init__()
        self.batches = _batches()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]


class LenGetItem:
    def __len__(self) -> int:
        return len(_batches())

    def __getitem__(self, i: int) -> Any:
        return _batches()[i]


class ReIterableBatches:
    def __iter__(self) -> Any:
        return iter(_batches())


def _generator_function() -> Any:
    yield from _batches()


def _columns() -> dict[str, Any]:
    x, y = _rows()
    return {"a": x[:, 0], "b": x[:, 1], "y": y}


def _torch_dataset() -> Any:
    import torch

    x, y = _rows()
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def _torch_iterable() -> Any:
    import torch

    class Rows(torch.utils.data.IterableDataset):  # type: ignore[misc]
        def __iter__(self) -> Any:
            x, y = _rows()
            return iter([(torch.from_numpy(x[i]), int(y[i])) for i in range(N_ROWS)])

    return Rows()


def _torch_loader() -> Any:
    import torch

    return torch.utils.data.DataLoader(_torch_dataset(), batch_size=BATCH)


def _grain_map() -> Any:
    import grain

    x, y = _rows()
    return grain.MapDataset.source([(x[i], y[i]) for i in range(N_ROWS)])


def _grain_iter() -> Any:
    return _grain_map().to_iter_dataset()


def _polars() -> Any:
    import polars as pl

    return pl.DataFrame(_columns())


def _arrow() -> Any:
    import pyarrow as pa

    return pa.table(_columns())


def _hf() -> Any:
    import datasets

    return datasets.Dataset.from_dict(_columns())


def _hf_iterable() -> Any:
    return _hf().to_iterable_dataset()


@dataclass
class Case:
    name: str
    make: Callable[[], Any]
    batched: bool
    kwargs: dict[str, Any]


CASES = [
    Case("tf.data unbatched", lambda: tf.data.Dataset.from_tensor_slices(_rows()), False, {}),
    Case("tf.data batched", lambda: tf.data.Dataset.from_tensor_slices(_rows()).batch(BATCH), True, {}),
    Case(
        "tf.data batched then mapped",
        lambda: tf.data.Dataset.from_tensor_slices(_rows()).batch(BATCH).map(lambda a, b: (a, b)).prefetch(1),
        True,
        {},
    ),
    Case("keras PyDataset", BatchSequence, True, {}),
    Case("keras Sequence", BatchSequence, True, {}),
    Case("len/getitem object", LenGetItem, True, {}),
    Case("list of batches", _batches, True, {}),
    Case("generator function", lambda: _generator_function, True, {}),
    Case("re-iterable", ReIterableBatches, True, {}),
    Case("one-shot generator", lambda: _generator_function(), True, {}),
    Case("one-shot iterator", lambda: iter(_batches()), True, {}),
    Case("numpy tuple", _rows, False, {}),
    Case("numpy dict", lambda: dict(zip("xy", _rows(), strict=False)), False, {}),
    Case("numpy array", lambda: _rows()[0], False, {}),
    Case(
        "pandas DataFrame",
        lambda: pd.DataFrame({"a": _rows()[0][:, 0], "b": _rows()[0][:, 1], "y": _rows()[1]}),
        False,
        {"label": "y"},
    ),
    Case("polars DataFrame", _polars, False, {"label": "y"}),
    Case("pyarrow Table", _arrow, False, {"label": "y"}),
    Case("HF Dataset", _hf, False, {"label": "y"}),
    Case("HF IterableDataset", _hf_iterable, False, {"label": "y"}),
    Case("torch Dataset", _torch_dataset, False, {}),
    Case("torch IterableDataset", _torch_iterable, False, {}),
    Case("torch DataLoader", _torch_loader, True, {}),
    Case("grain MapDataset", _grain_map, False, {}),
    Case("grain IterDataset", _grain_iter, False, {}),
]
_COLUMN_CASES = ("pandas DataFrame", "polars DataFrame", "pyarrow Table", "HF Dataset", "HF IterableDataset")


def _expected(case: Case) -> list[Any]:
    """The elements the source holds, as numpy, in order."""
    x, y = _rows()
    if case.name == "numpy dict":
        return [{"x": x[i], "y": y[i]} for i in range(N_ROWS)]
    if case.name == "numpy array":
        return [x[i] for i in range(N_ROWS)]
    if case.name in _COLUMN_CASES:
        return [({"a": x[i, 0], "b": x[i, 1]}, y[i]) for i in range(N_ROWS)]
    if case.batched:
        return list(_batches())
    return [(x[i], y[i]) for i in range(N_ROWS)]


def _as_numpy(element: Any) -> Any:
    return tf.nest.map_structure(lambda t: t.numpy(), element)


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=False):
        tf.nest.assert_same_structure(g, w)
        for a, b in zip(tf.nest.flatten(g), tf.nest.flatten(w), strict=False):
            np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_source_kind_gives_spec_inputs_and_every_element_once_in_order(case: Case) -> None:
    source = case.make()
    spec = tb.infer_spec(source, label=case.kwargs.get("label"))
    assert spec.batched is case.batched
    first = tf.nest.flatten(spec.signature)[0]
    if case.batched:
        assert first.shape[0] is None, "the batch axis of a batched source is None (short last batch)"

    inputs = tb.keras_inputs(source, label=case.kwargs.get("label"))
    if inputs is not None:
        for kt in tf.nest.flatten(inputs):
            assert kt.dtype != "float64", "keras_inputs applies the float policy"

    ds = tb.to_dataset(source, **case.kwargs)
    for ts in tf.nest.flatten(ds.element_spec):
        assert ts.dtype != tf.float64, "to_dataset casts float64 to floatx by default"
    got = [_as_numpy(e) for e in ds]
    _assert_same(got, _expected(case))


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in ("numpy array", "numpy dict")],
                         ids=lambda c: c.name)  # fmt: skip
def test_every_source_kind_trains_one_epoch_on_inputs_made_from_it(case: Case) -> None:
    label = case.kwargs.get("label")
    kwargs = dict(case.kwargs) if case.batched else {**case.kwargs, "batch_size": BATCH}
    ds = tb.to_dataset(case.make(), **kwargs)
    inputs = tb.keras_inputs(case.make(), label=label)
    flat = [keras.layers.Reshape((-1,))(t) for t in tf.nest.flatten(inputs)]
    joined = keras.layers.Concatenate()(flat) if len(flat) > 1 else flat[0]
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(joined))
    model.compile("sgd", "mse")
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


_PYTHON_INDEXED = ("keras PyDataset", "keras Sequence", "len/getitem object", "list of batches", "torch Dataset",
                   "grain MapDataset")  # fmt: skip


@pytest.mark.parametrize("case", [c for c in CASES if c.name in _PYTHON_INDEXED], ids=lambda c: c.name)
def test_every_python_indexed_kind_gives_the_same_elements_on_threads(case: Case) -> None:
    from tfbridge.sources import adapt

    source = case.make()
    kind = adapt(source)
    assert kind.random_access and kind.native_route is None  # read by index in Python: workers can help
    ds = tb.to_dataset(source, executor="thread", workers=3, **case.kwargs)
    _assert_same([_as_numpy(e) for e in ds], _expected(case))


def test_one_shot_generator_peeked_by_keras_inputs_then_converted_loses_and_repeats_nothing() -> None:
    def gen() -> Any:
        for i in range(20):
            yield np.full((2, 3), i, np.float32), np.array([i, i])

    it = gen()
    inputs = tb.keras_inputs(it)
    assert inputs.shape == (None, 3)
    spec = tb.infer_spec(it)  # a second peek replays, it does not consume
    assert spec.signature[0].shape.as_list() == [None, 3]
    with pytest.warns(tb.TfBridgeWarning, match="one-shot iterator"):
        ds = tb.to_dataset(it)
    labels = [int(y.numpy()[0]) for _, y in ds]
    assert labels == list(range(20))


def test_one_shot_iterator_validated_then_converted_keeps_every_element() -> None:
    it = iter([np.full((1, 2), i) for i in range(12)])
    assert tb.validate(it) == 12
    with pytest.warns(tb.TfBridgeWarning):
        ds = tb.to_dataset(it)
    assert [int(x.numpy()[0, 0]) for x in ds] == list(range(12))


def test_validate_all_on_a_labelled_one_shot_iterator_keeps_every_element() -> None:
    it = iter([{"x": np.zeros((2, 3)), "y": np.arange(2) + i} for i in range(5)])
    with pytest.warns(tb.TfBridgeWarning):
        ds = tb.to_dataset(it, label="y", validate="all")
    assert [int(y.numpy()[0]) for _, y in ds] == [0, 1, 2, 3, 4]


def test_dataframe_gives_dict_of_columns_with_strings_and_label_split() -> None:
    df = pd.DataFrame({"age": [30, 40, 50], "city": ["a", "bb", "ccc"], "score": [0.5, 0.25, 1.0], "label": [0, 1, 0]})
    spec = tb.infer_spec(df)
    assert set(spec.signature) == {"age", "city", "score", "label"}
    assert spec.signature["city"].dtype == tf.string
    ds = tb.to_dataset(df, label=["label"], batch_size=2)
    features, labels = next(iter(ds))
    assert set(features) == {"age", "city", "score"} and set(labels) == {"label"}
    assert features["city"].numpy().tolist() == [b"a", b"bb"]
    assert features["score"].dtype == tf.float32


def test_torch_style_map_dataset_defaults_to_one_example_per_index_via_batched_false() -> None:
    class Examples:
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> Any:
            return {"tokens": list(range(i + 1)), "label": i % 2}

    ds = tb.to_dataset(Examples(), batched=False)
    assert ds.element_spec["tokens"].shape.as_list() == [None]
    assert ds.element_spec["label"].dtype == tf.int64
    assert [e["tokens"].numpy().tolist() for e in ds][-1] == [0, 1, 2, 3, 4, 5]


def test_dataframe_token_list_column_converts_and_pads() -> None:
    df = pd.DataFrame({"tokens": [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], "label": [0, 1, 0, 1]})
    spec = tb.infer_spec(df)
    assert spec.signature["tokens"].shape.as_list() == [None]
    rows = [e[0]["tokens"].numpy().tolist() for e in tb.to_dataset(df, label="label")]
    assert rows == [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    batches = list(tb.pad_batch(df, 2))
    assert batches[0]["tokens"].numpy().tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batches[1]["tokens"].numpy().tolist() == [[5, 6, 0, 0], [7, 8, 9, 10]]


def test_dataframe_column_of_arrays_varying_beyond_their_first_dimension_converts_and_pads() -> None:
    # images of several sizes, and nested lists whose inner length varies: each row stays a dense array
    sizes = [(2, 3), (4, 3), (2, 5), (1, 1)]
    df = pd.DataFrame(
        {
            "img": [np.full(size, i, np.float64) for i, size in enumerate(sizes)],
            "nested": [[[1]], [[2, 3]], [[4, 5, 6]], [[7]]],
            "label": [0, 1, 0, 1],
        }
    )
    spec = tb.infer_spec(df, label="label")
    assert spec.features["img"].shape.as_list() == [None, None]
    assert spec.features["nested"].shape.as_list() == [1, None]
    rows = [(f["img"].numpy(), f["nested"].numpy().tolist(), int(y)) for f, y in tb.to_dataset(df, label="label")]
    assert [r[0].shape for r in rows] == sizes
    assert [float(r[0].max()) for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert [r[1] for r in rows] == [[[1]], [[2, 3]], [[4, 5, 6]], [[7]]]
    assert [r[2] for r in rows] == [0, 1, 0, 1]
    first = next(iter(tb.pad_batch(df, 2, label="label")))[0]
    assert first["img"].shape == (2, 4, 3) and first["nested"].numpy().tolist() == [[[1, 0]], [[2, 3]]]
    assert tb.validate(df) == 4


def test_a_0d_array_among_columns_is_refused_naming_it() -> None:
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec((np.ones((3, 2)), np.array(1.0)))
    assert str(info.value) == (
        "the arrays of the source need one row per example, but y is a 0-d array (a single value, no rows).\n"
        "Hint: give each array a leading axis of one row per example; for a single example, "
        "np.expand_dims(value, 0)."
    )


def test_masked_values_of_a_numpy_masked_array_are_refused_not_passed_as_data() -> None:
    labels = np.ma.masked_array([0, 1, 99, 1], mask=[False, False, True, False])
    refusal = r"^the array y is a numpy masked array with 1 masked value"
    with pytest.raises(tb.SpecInferenceError, match=refusal) as info:
        tb.to_dataset((np.ones((4, 2)), labels))
    assert info.value.path == "y" and "Hint: fill them first, e.g. arr.filled(0)" in str(info.value)
    unmasked = np.ma.masked_array(np.arange(4), mask=False)  # nothing hidden: read as the plain array
    assert [int(v) for v in tb.to_dataset(unmasked)] == [0, 1, 2, 3]


def test_batched_numpy_arrays_deliver_the_spec() -> None:
    x = np.arange(24, dtype=np.float64).reshape(4, 3, 2)  # 4 batches of 3 rows
    ds = tb.to_dataset(x, batched=True)
    assert ds.element_spec == tf.TensorSpec((None, 2), tf.float32)
    assert len(list(ds)) == 4


def test_slices_of_a_ragged_tensor_stay_ragged_when_cast_split_or_checked() -> None:
    """from_tensor_slices(ragged): each element's field is a RaggedTensorSpec of ragged_rank 0, which a tf.data map
    gives as a dense tensor; cast to floatx, split by label= or checked finite, it stays ragged, as without them."""
    tok = tf.ragged.constant([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]], dtype=tf.float64)
    flat = tf.RaggedTensorSpec(tf.TensorShape([None]), tf.float32, 0, tf.int64)
    tuples = tf.data.Dataset.from_tensor_slices(({"tok": tok}, tf.constant([0, 1, 2])))
    dicts = tf.data.Dataset.from_tensor_slices({"tok": tok, "y": tf.constant([0, 1, 2])})

    for ds in (
        tb.to_dataset(tuples),
        tb.to_dataset(dicts, label="y"),
        tb.to_dataset(dicts, label="y", validate="all", finite=True),
    ):
        assert ds.element_spec[0] == {"tok": flat}
        assert ds.cardinality().numpy() == 3
        assert [x["tok"].numpy().tolist() for x, _ in ds] == [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]
    inputs = tb.keras_inputs(dicts, label="y")
    assert inputs["tok"].ragged and inputs["tok"].dtype == "float32"
    batched = tb.to_dataset(dicts, label="y", batch_size=2)
    assert [x["tok"].to_list() for x, _ in batched] == [[[1.0, 2.0], [3.0]], [[4.0, 5.0, 6.0]]]
    alone = tb.to_dataset(tf.data.Dataset.from_tensor_slices(tok))
    assert alone.element_spec == flat
    assert [v.numpy().tolist() for v in alone] == [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]


def test_slices_with_sparse_fields_beside_ragged_ones_keep_both() -> None:
    ragged = tf.ragged.constant([[1.0, 2.0], [3.0]], dtype=tf.float64)
    sparse = tf.sparse.from_dense(tf.constant([[0.0, 1.0], [2.0, 0.0]], tf.float64))
    ds = tf.data.Dataset.from_tensor_slices({"r": ragged, "s": sparse, "y": tf.constant([0, 1])})

    out = tb.to_dataset(ds, label="y")

    x_spec = out.element_spec[0]
    assert x_spec["r"] == tf.RaggedTensorSpec(tf.TensorShape([None]), tf.float32, 0, tf.int64)
    assert x_spec["s"] == tf.SparseTensorSpec(tf.TensorShape([2]), tf.float32)
    got = [(x["r"].numpy().tolist(), tf.sparse.to_dense(x["s"]).numpy().tolist(), int(y)) for x, y in out]
    assert got == [([1.0, 2.0], [0.0, 1.0], 0), ([3.0], [2.0, 0.0], 1)]


@pytest.mark.parametrize("kind", ["ragged", "sparse"])
def test_tf_data_ragged_and_sparse_integers_a_float_spec_cannot_hold_are_refused(kind: str) -> None:
    if kind == "ragged":
        value = tf.ragged.constant([[1, 16_777_217], [3]], dtype=tf.int64)
        spec = tf.RaggedTensorSpec(tf.TensorShape([None, None]), tf.float32, 1, tf.int64)
    else:
        value = tf.sparse.from_dense(tf.constant([[0, 16_777_217]], tf.int64))
        spec = tf.SparseTensorSpec([None, 2], tf.float32)
    ds = tb.to_dataset(tf.data.Dataset.from_tensors(value), spec=spec, batched=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="int64 values that float32 cannot hold exactly"):
        list(ds)


def test_an_empty_hf_dataset_with_a_given_spec_is_an_empty_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    empty = datasets.Dataset.from_dict({"a": [1, 2]}).filter(lambda e: False)
    spec = tb.Spec.from_signature({"a": tf.TensorSpec((), tf.int64)}, batched=False)
    assert list(tb.to_dataset(empty, spec=spec)) == []
    assert tb.validate(empty, spec) == 0
    with pytest.raises(tb.SpecInferenceError, match="is empty"):
        tb.to_dataset(empty)

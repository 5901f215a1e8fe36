"""torch and grain sources, with the real libraries: spec, Keras inputs, order, epochs, executors, dtypes, errors."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import grain
import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
import torch
from _torch_grain_sources import (
    WIDTH,
    Counting,
    HalfPrecision,
    NoisyVectors,
    Records,
    clean,
    grain_map,
    index_of,
    noisy,
    rows,
)
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import tfbridge as tb
from tfbridge.sources import IndexedSource, StreamSource, adapt

pytestmark = pytest.mark.timeout(180)


def _elements(ds: Any) -> list[Any]:
    return list(ds.as_numpy_iterator())


def _fit(source: Any, epochs: int = 1, **kwargs: Any) -> list[str]:
    """Fit a tiny model on ``to_dataset(source, **kwargs)``; the warnings it gave."""
    inputs = tb.keras_inputs(source)
    model = keras.Model(inputs, keras.layers.Dense(WIDTH)(inputs))
    model.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(tb.to_dataset(source, **kwargs), epochs=epochs, verbose=0)
    assert len(history.history["loss"]) == epochs
    assert all(np.isfinite(history.history["loss"]))
    return [str(w.message) for w in caught]


def _check_noisy_pairs(elements: list[Any], order: list[int]) -> None:
    assert len(elements) == len(order)
    for (x, y), i in zip(elements, order, strict=True):
        np.testing.assert_array_equal(x, noisy(i))
        np.testing.assert_array_equal(y, clean(i))


# -- torch map-style Dataset ----------------------------------------------------------------------------------


def test_torch_dataset_of_noisy_and_clean_vectors_is_one_example_per_index() -> None:
    ds = NoisyVectors()
    src = adapt(ds)
    assert isinstance(src, IndexedSource) and not src.batched
    spec = tb.infer_spec(ds)
    assert not spec.batched
    assert [(path, leaf.shape, leaf.dtype) for path, leaf in spec.fields()] == [
        ("x", (WIDTH,), "float32"),
        ("y", (WIDTH,), "float32"),
    ]
    inputs = tb.keras_inputs(ds)  # the features only: noisy_x, with a batch axis
    assert isinstance(inputs, keras.KerasTensor)
    assert inputs.shape == (None, WIDTH) and inputs.dtype == "float32"


def test_torch_dataset_gives_every_example_once_in_order_with_its_values() -> None:
    ds = tb.to_dataset(NoisyVectors())
    assert int(ds.cardinality()) == 20
    assert ds.element_spec == (tf.TensorSpec((WIDTH,), tf.float32), tf.TensorSpec((WIDTH,), tf.float32))
    _check_noisy_pairs(_elements(ds), list(range(20)))


def test_torch_dataset_trains_a_keras_model_for_one_epoch() -> None:
    _fit(NoisyVectors(), batch_size=4)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_torch_dataset_runs_on_every_executor_in_order(executor: str) -> None:
    ds = tb.to_dataset(NoisyVectors(), executor=executor, workers=2)
    for _ in range(2):  # two epochs: the same elements, in order
        _check_noisy_pairs(_elements(ds), list(range(20)))


def test_torch_dataset_shuffled_with_a_seed_is_a_reproducible_permutation_each_epoch() -> None:
    def ids(ds: Any) -> list[int]:
        return [index_of(y) for _, y in _elements(ds)]

    ds = tb.to_dataset(NoisyVectors(), shuffle=True, seed=7)
    first, second = ids(ds), ids(ds)
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != list(range(20)) and first != second
    assert ids(tb.to_dataset(NoisyVectors(), shuffle=True, seed=7)) == first


def test_torch_dict_examples_keep_their_keys_and_dtypes() -> None:
    spec = tb.infer_spec(Records())
    assert {path: (leaf.shape, leaf.dtype) for path, leaf in spec.fields()} == {
        "x['id']": ((), "int64"),
        "x['mask']": ((3,), "bool"),
        "x['x']": ((3,), "float32"),
    }
    elements = _elements(tb.to_dataset(Records()))
    assert [int(e["id"]) for e in elements] == list(range(10))
    np.testing.assert_array_equal(elements[3]["x"], np.full(3, 3.0, np.float32))
    np.testing.assert_array_equal(elements[3]["mask"], [True, False, False])


def test_torch_tensor_dataset_and_label_split() -> None:
    x = torch.arange(30, dtype=torch.float64).reshape(10, 3)
    y = torch.arange(10)
    ds = TensorDataset(x, y)
    spec = tb.infer_spec(ds)
    assert [(leaf.shape, leaf.dtype) for _, leaf in spec.fields()] == [((3,), "float64"), ((), "int64")]
    out = tb.to_dataset(ds, batch_size=4)  # float64 becomes floatx, as for every source
    assert out.element_spec == (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    batches = _elements(out)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x.numpy().astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y.numpy())

    labelled = tb.to_dataset(Records(), label="id")
    features, label = _elements(labelled)[4]
    assert sorted(features) == ["mask", "x"] and int(label) == 4


def test_torch_dataset_of_batches_with_batched_true() -> None:
    class Batches(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            n = 4 if i < 2 else 2
            return torch.ones(n, 5) * i, torch.full((n,), i)

    spec = tb.infer_spec(Batches(), batched=True)
    assert spec.batched and tb.keras_inputs(Batches(), batched=True).shape == (None, 5)
    assert [b[0].shape for b in _elements(tb.to_dataset(Batches(), batched=True))] == [(4, 5), (4, 5), (2, 5)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["serial", "process"])
def test_bfloat16_and_float16_tensors_keep_their_dtypes_and_values(executor: str) -> None:
    spec = tb.infer_spec(HalfPrecision())
    assert [leaf.dtype for _, leaf in spec.fields()] == ["bfloat16", "float16"]
    ds = tb.to_dataset(HalfPrecision(), executor=executor, workers=2)
    assert ds.element_spec == (tf.TensorSpec((4,), tf.bfloat16), tf.TensorSpec((4,), tf.float16))
    elements = _elements(ds)
    assert len(elements) == 6
    for i, (b16, f16) in enumerate(elements):
        want = np.arange(4, dtype=np.float32) / 4 + i
        assert b16.dtype == ml_dtypes.bfloat16 and f16.dtype == np.float16
        np.testing.assert_array_equal(b16.astype(np.float32), want)
        np.testing.assert_array_equal(f16.astype(np.float32), want)
    inputs = tb.keras_inputs(HalfPrecision())
    assert inputs.dtype == "bfloat16"  # only float64 is cast to floatx


def test_a_bfloat16_tensor_that_needs_grad_or_is_a_strided_view_converts() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16).requires_grad_()
    ds = TensorDataset(base.t())  # rows of the transpose: strided views, requiring grad
    (first,) = _elements(tb.to_dataset(ds))[0]
    assert first.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(first.astype(np.float32), [0.0, 4.0, 8.0])


class _Complex32(Dataset):
    """Element 4 holds a complex32 tensor (no numpy equivalent); the others float32."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: "ComplexHalf support is experimental"
            value = torch.zeros(2, dtype=torch.complex32 if i == 4 else torch.float32)
        return torch.ones(3), value


def test_a_tensor_numpy_cannot_hold_is_named_with_its_element_and_field() -> None:
    with pytest.raises(tb.SpecInferenceError, match=r"element 4 at y: a torch.Tensor of dtype torch.complex32") as e:
        tb.infer_spec(_Complex32())
    assert "no numpy equivalent" in str(e.value) and ".to(torch.complex64)" in str(e.value)
    assert e.value.path == "y"

    ds = tb.to_dataset(_Complex32(), peek=1)  # the peek misses it; the check where it is produced does not
    produced = r"SpecMismatchError: element 4 at y: expected float32\(2,\), got a torch.Tensor of dtype torch.complex32"
    with pytest.raises(tf.errors.OpError, match=produced):
        _elements(ds)


def test_a_sparse_tensor_says_to_make_it_dense() -> None:
    class Sparse(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> Any:
            return {"m": torch.eye(2).to_sparse()}

    with pytest.raises(tb.SpecInferenceError, match=r"element 0 at x\['m'\]: .*layout torch.sparse_coo.*to_dense"):
        tb.infer_spec(Sparse())


def test_an_element_that_is_not_tensors_or_arrays_is_refused_naming_the_field() -> None:
    class Opaque(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return torch.zeros(2), object()

    with pytest.raises(tb.SpecInferenceError, match=r"element 0 at y: a builtins.object is not a tensor") as e:
        tb.infer_spec(Opaque())
    assert "Hint: fields must be numpy arrays, tensors" in str(e.value)


def test_a_torch_dataset_without_len_is_refused_with_a_way_out() -> None:
    class NoLen(Dataset):
        def __getitem__(self, i: int) -> Any:
            return torch.zeros(2)

    with pytest.raises(tb.TfBridgeError, match=r"has no __len__: a map-style dataset is read by index") as e:
        tb.infer_spec(NoLen())
    assert "Hint: define __len__, make it a torch.utils.data.IterableDataset" in str(e.value)


def test_an_error_in_the_dataset_is_a_source_error_naming_the_index() -> None:
    class Fails(Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> Any:
            if i == 3:
                raise KeyError("row 3 is missing")
            return torch.zeros(2)

    ds = tb.to_dataset(Fails(), peek=1)
    with pytest.raises(tf.errors.OpError, match=r"SourceError: element 3: KeyError: 'row 3 is missing'"):
        _elements(ds)


# -- torch IterableDataset ------------------------------------------------------------------------------------------


def test_torch_iterable_dataset_is_a_stream_of_examples_in_order() -> None:
    src = adapt(Counting())
    assert isinstance(src, StreamSource) and not src.batched and not src.random_access
    spec = tb.infer_spec(Counting())
    assert [(leaf.shape, leaf.dtype) for _, leaf in spec.fields()] == [((WIDTH,), "float32"), ((), "int64")]
    assert tb.keras_inputs(Counting()).shape == (None, WIDTH)
    ds = tb.to_dataset(Counting())
    for _ in range(2):  # each pass iterates the dataset anew
        elements = _elements(ds)
        assert [int(y) for _, y in elements] == list(range(7))
        for x, y in elements:
            np.testing.assert_array_equal(x, clean(int(y)))


def test_torch_iterable_dataset_trains_a_keras_model() -> None:
    class Pairs(IterableDataset):
        def __iter__(self) -> Iterator[Any]:
            for i in range(12):
                yield torch.from_numpy(noisy(i)), torch.from_numpy(clean(i))

    _fit(Pairs(), batch_size=4)


def test_torch_iterable_dataset_cannot_be_shuffled() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"shuffle=True needs random access.*is a stream"):
        tb.to_dataset(Counting(), shuffle=True, seed=1)


# -- torch DataLoader -------------------------------------------------------------------------------------------------


def test_dataloader_batches_split_into_x_and_y_and_inputs_are_for_x_only() -> None:
    loader = DataLoader(NoisyVectors(), batch_size=8)
    spec = tb.infer_spec(loader)
    assert spec.batched
    assert spec.labels == tf.TensorSpec((None, WIDTH), tf.float32)  # the collated [xb, yb] read as (xb, yb)
    inputs = tb.keras_inputs(loader)
    assert isinstance(inputs, keras.KerasTensor) and inputs.shape == (None, WIDTH)


def test_dataloader_gives_every_example_once_in_order_and_its_length_is_the_cardinality() -> None:
    loader = DataLoader(NoisyVectors(), batch_size=8)
    ds = tb.to_dataset(loader)
    assert int(ds.cardinality()) == len(loader) == 3
    batches = _elements(ds)
    assert [len(x) for x, _ in batches] == [8, 8, 4]
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    _check_noisy_pairs(list(zip(xs, ys, strict=True)), list(range(20)))


def test_dataloader_fits_two_epochs_without_running_out_of_data() -> None:
    loader = DataLoader(NoisyVectors(), batch_size=8, shuffle=True)
    caught = _fit(loader, epochs=2)
    assert not [m for m in caught if "ran out of data" in m]


def test_a_shuffling_dataloader_is_iterated_anew_each_epoch() -> None:
    loader = DataLoader(Records(12), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(3))
    ds = tb.to_dataset(loader)
    assert int(ds.cardinality()) == 3
    epochs = [np.concatenate([b["id"] for b in _elements(ds)]).tolist() for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert epochs[0] != epochs[1]


def test_dataloader_dict_batches_stay_dicts_and_label_keeps_the_cardinality() -> None:
    loader = DataLoader(Records(10), batch_size=4)
    spec = tb.infer_spec(loader)
    assert sorted(spec.signature) == ["id", "mask", "x"] and spec.labels is None
    labelled = tb.to_dataset(loader, label="id")
    assert int(labelled.cardinality()) == 3
    batches = _elements(labelled)
    assert [sorted(features) for features, _ in batches] == [["mask", "x"]] * 3
    assert np.concatenate([ids for _, ids in batches]).tolist() == list(range(10))


def test_dataloader_without_batch_size_gives_examples() -> None:
    loader = DataLoader(NoisyVectors(), batch_size=None)
    spec = tb.infer_spec(loader)
    assert not spec.batched and spec.features.shape == (WIDTH,)
    ds = tb.to_dataset(loader)
    assert int(ds.cardinality()) == 20
    _check_noisy_pairs(_elements(ds), list(range(20)))


def test_dataloader_over_an_iterable_dataset_has_no_promised_length() -> None:
    loader = DataLoader(Counting(), batch_size=3)
    ds = tb.to_dataset(loader)
    assert int(ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    assert [len(y) for _, y in _elements(ds)] == [3, 3, 1]


def test_dataloader_with_bfloat16_batches() -> None:
    ds = tb.to_dataset(DataLoader(HalfPrecision(), batch_size=4))
    assert ds.element_spec == (tf.TensorSpec((None, 4), tf.bfloat16), tf.TensorSpec((None, 4), tf.float16))
    assert [b.shape for b, _ in _elements(ds)] == [(4, 4), (2, 4)]


def test_a_dataloader_cannot_be_shuffled_by_tfbridge() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"shuffle=True needs random access"):
        tb.to_dataset(DataLoader(NoisyVectors(), batch_size=4), shuffle=True, seed=1)


# -- grain -------------------------------------------------------------------------------------------------------------


def _check_grain_pairs(elements: list[Any], order: list[int]) -> None:
    assert len(elements) == len(order)
    for (x, total), i in zip(elements, order, strict=True):
        np.testing.assert_array_equal(x, clean(i))
        assert total == np.float32(clean(i).sum())


def test_grain_map_dataset_is_indexed_per_example() -> None:
    ds = grain_map()
    src = adapt(ds)
    assert isinstance(src, IndexedSource) and not src.batched
    spec = tb.infer_spec(ds)
    assert [(leaf.shape, leaf.dtype) for _, leaf in spec.fields()] == [((WIDTH,), "float32"), ((), "float32")]
    assert tb.keras_inputs(ds).shape == (None, WIDTH)
    out = tb.to_dataset(ds)
    assert int(out.cardinality()) == 12
    _check_grain_pairs(_elements(out), list(range(12)))


def test_grain_map_dataset_trains_a_keras_model() -> None:
    pairs = grain.MapDataset.source(list(range(16))).map(lambda i: (noisy(i), clean(i)))
    _fit(pairs, batch_size=4)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_grain_map_dataset_runs_on_every_executor_in_order(executor: str) -> None:
    ds = tb.to_dataset(grain_map(), executor=executor, workers=2)
    for _ in range(2):
        _check_grain_pairs(_elements(ds), list(range(12)))


def test_grain_map_dataset_shuffled_with_a_seed_is_a_permutation() -> None:
    ds = tb.to_dataset(grain_map(), shuffle=True, seed=5)
    order = [index_of(x) for x, _ in _elements(ds)]
    assert sorted(order) == list(range(12)) and order != list(range(12))
    _check_grain_pairs(_elements(tb.to_dataset(grain_map(), shuffle=True, seed=5)), order)


def test_grain_batch_makes_batches_also_after_later_maps() -> None:
    for ds in (grain_map().batch(5), grain_map().batch(5).map(lambda b: b)):
        assert adapt(ds).batched
        spec = tb.infer_spec(ds)
        assert spec.batched and [leaf.shape for _, leaf in spec.fields()] == [(None, WIDTH), (None,)]
        assert tb.keras_inputs(ds).shape == (None, WIDTH)
        out = tb.to_dataset(ds)
        assert int(out.cardinality()) == 3
        batches = _elements(out)
        assert [len(x) for x, _ in batches] == [5, 5, 2]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), rows())


def test_grain_iter_dataset_is_a_stream_of_examples_or_of_its_batches() -> None:
    examples = grain_map().to_iter_dataset()
    src = adapt(examples)
    assert isinstance(src, StreamSource) and not src.batched
    assert tb.keras_inputs(examples).shape == (None, WIDTH)
    ds = tb.to_dataset(examples)
    for _ in range(2):
        _check_grain_pairs(_elements(ds), list(range(12)))

    batches = grain_map().to_iter_dataset().batch(4)
    assert tb.infer_spec(batches).batched
    out = _elements(tb.to_dataset(batches))
    assert [len(x) for x, _ in out] == [4, 4, 4]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in out]), rows())


def test_grain_iter_dataset_trains_a_keras_model() -> None:
    pairs = grain.MapDataset.source(list(range(16))).to_iter_dataset().map(lambda i: (noisy(i), clean(i))).batch(4)
    _fit(pairs)


def _grain_loader(operations: list[Any]) -> Any:
    data = rows(10)
    sampler = grain.samplers.IndexSampler(len(data), shard_options=grain.sharding.NoSharding(), shuffle=False,
                                          num_epochs=1)  # fmt: skip
    return grain.DataLoader(data_source=data, sampler=sampler, operations=operations, worker_count=0)


def test_grain_dataloader_is_a_stream_batched_when_its_operations_batch() -> None:
    batched = _grain_loader([grain.transforms.Batch(4)])
    spec = tb.infer_spec(batched)
    assert spec.batched and spec.features.shape == (None, WIDTH)
    ds = tb.to_dataset(batched)
    for _ in range(2):  # a new iter(loader) each pass
        out = _elements(ds)
        assert [len(b) for b in out] == [4, 4, 2]
        np.testing.assert_array_equal(np.concatenate(out), rows(10))

    examples = _grain_loader([])
    assert not tb.infer_spec(examples).batched
    assert tb.keras_inputs(examples).shape == (None, WIDTH)
    np.testing.assert_array_equal(np.stack(_elements(tb.to_dataset(examples))), rows(10))


def test_grain_filter_is_read_in_order_without_the_filtered_out_indices() -> None:
    ds = grain.MapDataset.source(rows()).filter(lambda row: index_of(row) % 3 == 0)
    assert isinstance(adapt(ds), StreamSource)
    np.testing.assert_array_equal(np.stack(_elements(tb.to_dataset(ds))), rows()[::3])


def test_grain_dataset_repeating_forever_is_an_infinite_stream() -> None:
    ds = grain_map(3).repeat().batch(2)
    src = adapt(ds)
    assert isinstance(src, StreamSource) and src.infinite and src.batched
    out = _elements(tb.to_dataset(ds).take(4))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in out]), np.concatenate([rows(3)] * 3)[:8])
    assert isinstance(adapt(grain_map(3).repeat()[:5]), IndexedSource)  # a finite slice of it is indexed


def test_grain_data_source_is_one_record_per_index() -> None:
    spec = tb.infer_spec(grain.sources.RangeDataSource(0, 5, 1))
    assert not spec.batched and spec.features.shape == ()


def test_grain_element_that_is_not_arrays_is_refused_naming_the_field() -> None:
    ds = grain.MapDataset.source(list(range(4))).map(lambda i: {"x": np.zeros(2), "meta": {1, 2}})
    with pytest.raises(tb.SpecInferenceError, match=r"element 0 at x\['meta'\]: a builtins.set is not a tensor"):
        tb.infer_spec(ds)


def test_an_error_in_a_grain_map_is_a_source_error_naming_the_index() -> None:
    def parse(i: int) -> np.ndarray:
        if i == 2:
            raise ValueError("bad record 2")
        return np.zeros(2)

    ds = tb.to_dataset(grain.MapDataset.source(list(range(4))).map(parse), peek=1)
    with pytest.raises(tf.errors.OpError, match=r"SourceError: element 2: ValueError: bad record 2"):
        _elements(ds)


def test_torch_tensors_in_memory_are_columns_of_examples_like_numpy_arrays() -> None:
    x = torch.arange(30, dtype=torch.float64).reshape(10, 3)
    y = torch.arange(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one row per example by kind: no guess, no warning
        spec = tb.infer_spec((x, y))
        alone = tb.infer_spec(x)
    assert not spec.batched and dict(spec.fields()) == {"x": tb.Leaf((3,), "float64"), "y": tb.Leaf((), "int64")}
    assert not alone.batched and alone.signature == tf.TensorSpec((3,), tf.float64)
    ds = tb.to_dataset((x, y), batch_size=4)
    assert ds.element_spec == (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    got = list(ds.as_numpy_iterator())
    assert [b[1].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x.numpy().astype(np.float32))
    assert set(tb.keras_inputs({"a": x, "b": y}, label="b")) == {"a"}


def test_tensorflow_eager_tensors_in_memory_are_columns_of_examples() -> None:
    spec = tb.infer_spec((tf.ones((5, 2), tf.float64), tf.range(5)))
    assert not spec.batched and dict(spec.fields()) == {"x": tb.Leaf((2,), "float64"), "y": tb.Leaf((), "int32")}
    assert [int(y) for _, y in tb.to_dataset((tf.ones((5, 2)), tf.range(5)))] == [0, 1, 2, 3, 4]


def test_a_torch_tensor_numpy_cannot_hold_is_named_as_a_column() -> None:
    with pytest.raises(tb.SpecInferenceError, match=r"^column y: a torch\.Tensor of dtype torch\.float32 \(layout "):
        tb.infer_spec((torch.ones(4, 2), torch.ones(4, 2).to_sparse()))

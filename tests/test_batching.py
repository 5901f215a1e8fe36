"""Batching: to_dataset's batch_size for sources of single examples, pad_batch (padding, pad values, ragged
batches, buckets) and bucket_boundaries."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb


def _brute_force_cost(lengths: np.ndarray, k: int) -> int:
    values = np.unique(lengths)

    def cost(bounds: list[int]) -> int:
        edges = [0, *bounds, 10**9]
        return sum(
            int(g.max()) * g.size
            for lo, hi in itertools.pairwise(edges)
            if (g := lengths[(lengths >= lo) & (lengths < hi)]).size
        )

    return min(
        cost([int(v) + 1 for v in combo])
        for r in range(min(k - 1, len(values) - 1) + 1)
        for combo in itertools.combinations(values[:-1], r)
    )


def _cost(lengths: np.ndarray, bounds: list[int]) -> int:
    edges = [0, *bounds, 10**9]
    return sum(
        int(g.max()) * g.size
        for lo, hi in itertools.pairwise(edges)
        if (g := lengths[(lengths >= lo) & (lengths < hi)]).size
    )


@pytest.mark.parametrize("seed", range(25))
def test_bucket_boundaries_are_optimal_on_small_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=int(rng.integers(1, 14)))
    k = int(rng.integers(1, 5))
    bounds = tb.bucket_boundaries(lengths, k)
    assert len(bounds) == k - 1 and bounds == sorted(set(bounds))
    assert _cost(lengths, bounds) == _brute_force_cost(lengths, k)


def test_bucket_boundaries_rejects_bad_input_with_message() -> None:
    with pytest.raises(tb.TfBridgeError, match="num_buckets must be a positive int"):
        tb.bucket_boundaries([1, 2], 0)
    with pytest.raises(tb.TfBridgeError, match="lengths must be a non-empty 1-D"):
        tb.bucket_boundaries([], 2)


def test_batch_size_batches_an_unbatched_python_source_with_a_short_last_batch() -> None:
    def rows() -> Any:
        for i in range(10):
            yield {"x": np.full(3, i, np.float32), "y": i}

    ds = tb.to_dataset(rows, batched=False, batch_size=4)
    assert ds.element_spec["x"].shape.as_list() == [None, 3]
    assert [b["y"].numpy().tolist() for b in ds] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _examples() -> Any:
    rng = np.random.default_rng(0)
    for i in range(57):
        yield rng.integers(1, 9, int(rng.integers(1, 30))), i


def test_pad_batch_pads_each_batch_to_its_longest_and_keeps_every_example() -> None:
    batches = tb.pad_batch(_examples, 8)
    assert batches.element_spec[0].shape.as_list() == [None, None]
    seen = []
    originals = {i: x for x, i in _examples()}
    for x, ids in batches:
        x = x.numpy()
        longest = max(len(originals[int(i)]) for i in ids.numpy())
        assert x.shape[1] == longest
        for row, i in zip(x, ids.numpy(), strict=False):
            n = len(originals[int(i)])
            np.testing.assert_array_equal(row[:n], originals[int(i)])
            assert (row[n:] == 0).all()
            seen.append(int(i))
    assert seen == list(range(57))


@pytest.mark.parametrize("buckets", [3, [5, 12, 20]])
def test_bucketed_pad_batch_delivers_every_example_exactly_once(buckets: Any) -> None:
    batches = tb.pad_batch(_examples, 8, buckets=buckets)
    ids = sorted(int(i) for _, b in batches for i in b.numpy())
    assert ids == list(range(57))
    for x, _b in batches:
        assert x.shape[0] <= 8


def test_pad_batch_pads_strings_with_empty_bytes_and_uses_pad_value() -> None:
    def rows() -> Any:
        for i in range(4):
            yield {"words": ["w"] * (i + 1), "ids": np.arange(i + 1)}

    batch = next(iter(tb.pad_batch(rows, 4, pad_value={"words": "", "ids": -1})))
    assert batch["words"].numpy()[0].tolist() == [b"w", b"", b"", b""]
    assert batch["ids"].numpy()[0].tolist() == [0, -1, -1, -1]


def test_pad_batch_pads_bool_masks_with_false_and_refuses_a_pad_value_that_does_not_fit() -> None:
    def rows() -> Any:
        for n in (1, 3):
            yield {"ids": np.arange(n), "mask": np.ones(n, bool)}

    batch = next(iter(tb.pad_batch(rows, 2)))
    assert batch["mask"].numpy().tolist() == [[True, False, False], [True, True, True]]
    with pytest.raises(tb.TfBridgeError, match=r"pad_value -1.5 does not fit a field of dtype int64"):
        tb.pad_batch(rows, 2, pad_value={"ids": -1.5, "mask": False})


def _float_frames() -> Any:
    """Variable-length float64 frames with an int64 label (a fixed shape: never padded)."""
    for n in (1, 3, 2):
        yield np.full((n, 2), 0.5), n


@pytest.mark.parametrize("route", ["source", "to_dataset", "tf.data"])
def test_one_float_pad_value_pads_float_frames_and_leaves_the_int_label_alone(route: str) -> None:
    source: Any = {
        "source": _float_frames,
        "to_dataset": tb.to_dataset(_float_frames, batched=False),
        "tf.data": tf.data.Dataset.from_generator(
            _float_frames, output_signature=(tf.TensorSpec((None, 2), tf.float64), tf.TensorSpec((), tf.int64))
        ),
    }[route]
    x, y = next(iter(tb.pad_batch(source, 3, pad_value=-1.0)))
    assert y.numpy().tolist() == [1, 3, 2]
    assert x.numpy()[:, :, 0].tolist() == [[0.5, -1.0, -1.0], [0.5, 0.5, 0.5], [0.5, 0.5, -1.0]]


def test_a_pad_value_that_fits_no_varying_field_names_the_structure_to_give() -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.pad_batch(_float_frames, 3, pad_value="pad")
    assert str(info.value).splitlines()[1] == (
        "Hint: give pad_value per field, in the structure of the elements, e.g. pad_value=(0.0, 0)."
    )
    with pytest.raises(tb.TfBridgeError, match=r"^pad_value must be a scalar or have the structure of the "
                       r"elements, e\.g\. \(0\.0, 0\)\. Received: \{'x': 0\}$"):  # fmt: skip
        tb.pad_batch(_float_frames, 3, pad_value={"x": 0})


def test_pad_batch_bucket_count_refuses_to_use_up_a_one_shot_iterator() -> None:
    it = iter([np.arange(n) for n in (1, 2, 3, 4)])
    with pytest.raises(tb.TfBridgeError, match="would use up a one-shot iterator"):
        tb.pad_batch(it, 2, buckets=2)


def test_pad_batch_refuses_an_already_batched_dataset() -> None:
    ds = tf.data.Dataset.range(10).batch(2)
    with pytest.raises(tb.TfBridgeError, match="already batched"):
        tb.pad_batch(ds, 4)


@pytest.mark.parametrize("buckets", [None, 3])
def test_ragged_batches_keep_every_example_unpadded(buckets: Any) -> None:
    batches = tb.pad_batch(_examples, 8, buckets=buckets, ragged=True)
    assert isinstance(batches.element_spec[0], tf.RaggedTensorSpec)
    originals = {i: x for x, i in _examples()}
    seen = []
    for x, ids in batches:
        for row, i in zip(x.to_list(), ids.numpy(), strict=False):
            assert row == originals[int(i)].tolist()
            seen.append(int(i))
    assert sorted(seen) == list(range(57))


def test_bucketed_batches_hold_one_bucket_each() -> None:
    bounds = [5, 12, 20]
    for x, _ in tb.pad_batch(_examples, 8, buckets=bounds, ragged=True):
        lengths = [len(r) for r in x.to_list()]
        buckets = {int(np.searchsorted(bounds, n, side="right")) for n in lengths}
        assert len(buckets) == 1


def test_lognormal_lengths_with_16_buckets_pad_at_most_15_percent() -> None:
    rng = np.random.default_rng(0)
    lengths = (rng.lognormal(np.log(60), 0.8, 5000)).astype(int) + 1  # 78 batches of 64 (1.11x here)

    def gen() -> Any:
        for n in lengths:
            yield np.ones(n, np.int8)

    padded = sum(int(np.prod(x.shape)) for x in tb.pad_batch(gen, 64, buckets=16, verbose=False))
    assert padded / lengths.sum() <= 1.15


def test_pad_batch_of_a_to_dataset_result_pads_where_the_rows_are_gathered_with_the_same_batches() -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    tokens = [rng.integers(1, 9, int(n)).astype(np.int32) for n in rng.integers(1, 12, 50)]
    df = pd.DataFrame({"tokens": tokens, "label": np.arange(50) % 3})
    fast = tb.pad_batch(tb.to_dataset(df, label="label"), 8)
    # the reference: tf.data's own padded_batch over the same single examples
    plain = tb.to_dataset(df, label="label").map(lambda x, y: (x, y)).padded_batch(8)
    assert fast.element_spec == plain.element_spec
    got, want = list(fast.as_numpy_iterator()), list(plain.as_numpy_iterator())
    assert len(got) == len(want) == 7
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gx["tokens"], wx["tokens"])  # each batch padded to its own longest
        np.testing.assert_array_equal(gy, wy)
    assert tb.pad_batch(tb.to_dataset(df, label="label"), 8, drop_remainder=True).cardinality() == 6


def test_a_fixed_shape_dataset_does_not_keep_the_users_arrays_alive_for_a_rebuild() -> None:
    import gc
    import weakref

    x = np.zeros((1000, 8))
    ref = weakref.ref(x)
    ds = tb.to_dataset(x)  # the tensors were copied into the graph; nothing here needs padding later
    del x
    gc.collect()
    assert ref() is None
    assert sum(1 for _ in ds) == 1000


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucketed_pad_batch_tells_its_batch_count(ragged: bool, drop_remainder: bool) -> None:
    batches = tb.pad_batch(_examples, 8, buckets=3, ragged=ragged, drop_remainder=drop_remainder)
    counted = sum(1 for _ in batches)
    assert int(batches.cardinality()) == counted
    assert sum(1 for _ in batches) == counted  # the second epoch too (the assertion holds)


def test_keras_fit_on_bucketed_pad_batch_knows_its_steps_and_never_runs_out() -> None:
    import warnings

    import keras

    def pairs() -> Any:
        for x, _ in _examples():
            yield x, np.float32(len(x))

    batches = tb.pad_batch(pairs, 8, buckets=3)
    model = keras.Sequential(
        [keras.Input((None,), dtype="int64"), keras.layers.Embedding(10, 4), keras.layers.GlobalAveragePooling1D(),
         keras.layers.Dense(1)]
    )  # fmt: skip
    model.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(batches, epochs=2, verbose=0)
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert len(history.history["loss"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 2**31}, r"batch_size must be at most 16,777,216: TensorFlow reserves room for a whole batch"),
        ({"batch_size": 8, "buckets": True}, r"buckets must be None, a number of buckets or a list of boundaries\. "
                                             r"Received: buckets=True"),
        ({"batch_size": 8, "buckets": [2**40]}, r"boundaries below 2\*\*31 \(lengths are int32 in the graph\)\. "
                                                r"Received: \[1099511627776\]"),
        ({"batch_size": 8, "buckets": "abc"}, r"increasing positive boundaries below 2\*\*31"),
    ],
)
def test_pad_batch_refuses_sizes_and_buckets_tensorflow_cannot_take_before_reading_the_source(
    kwargs: dict[str, Any], message: str
) -> None:
    calls = []

    def rows() -> Any:
        calls.append(1)
        yield np.arange(3)

    with pytest.raises(tb.TfBridgeError, match=message):
        tb.pad_batch(rows, **kwargs)
    assert calls == []


def test_to_dataset_refuses_a_batch_size_tensorflow_would_abort_on() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"batch_size must be at most 16,777,216.*\nHint: use a batch size"):
        tb.to_dataset(np.zeros((4, 2)), batch_size=2**30)


def _tokens_and_ids() -> Any:
    """Dict elements whose first variable field ("mask") is not the one to bucket by ("tokens")."""
    for i in range(6):
        yield {"mask": np.ones(6 - i, bool), "tokens": np.arange(i + 1, dtype=np.int64)}, i


def test_length_fn_decides_the_bucket_of_each_element() -> None:
    ds = tb.pad_batch(_tokens_and_ids, 3, buckets=[4], length_fn=lambda e: tf.shape(e[0]["tokens"])[0])
    got = sorted((y.numpy().tolist(), x["tokens"].shape[1]) for x, y in ds)
    assert got == [([0, 1, 2], 3), ([3, 4, 5], 6)]  # token lengths 1-3 below 4, 4-6 above


@pytest.mark.parametrize(
    ("length_fn", "said"),
    [
        (lambda e: len(e[0]["tokens"]), "TypeError: len is not well defined for a symbolic Tensor"),
        (lambda e: e[0]["tokens"].shape[0], "ValueError: None values not supported."),
    ],
    ids=["len", "static-shape"],
)
@pytest.mark.parametrize("buckets", [2, [4]], ids=["count", "boundaries"])
def test_a_length_fn_that_cannot_be_traced_is_a_tfbridge_error_with_a_hint(
    length_fn: Any, said: str, buckets: Any
) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.pad_batch(_tokens_and_ids, 3, buckets=buckets, length_fn=length_fn)
    text = str(info.value)
    assert text.startswith(f"length_fn failed while tf.data traced it: {said}")
    assert "Hint: length_fn gets the whole element (e.g. (features, label)) as symbolic tensors" in text
    assert "in user code" not in text


def test_a_length_fn_that_returns_more_than_one_number_is_refused() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"^length_fn must return one length per element \(a scalar\), but it "
                       r"returned shape \(1,\)\.\nHint: "):  # fmt: skip
        tb.pad_batch(_tokens_and_ids, 3, buckets=[4], length_fn=lambda e: tf.shape(e[0]["tokens"]))


def _nested_lists() -> Any:
    """Elements whose "x" is a list of lists of unequal length: a ragged field."""
    for i in range(6):
        yield {"x": [[1] * (j + 1) for j in range(i % 3 + 1)]}, i


@pytest.mark.parametrize("buckets", [None, 2], ids=["plain", "bucketed"])
@pytest.mark.parametrize("made", [False, True], ids=["source", "to_dataset"])
def test_a_ragged_field_is_refused_naming_it_and_pointing_at_ragged_true(buckets: Any, made: bool) -> None:
    source = tb.to_dataset(_nested_lists, batched=False) if made else _nested_lists
    with pytest.raises(tb.TfBridgeError) as info:
        tb.pad_batch(source, 2, buckets=buckets)
    assert str(info.value) == (
        "pad_batch pads dense tensors; this dataset's x['x'] is a RaggedTensorSpec.\n"
        "Hint: pass ragged=True for ragged batches (no padding), bucketed or not, or batch ragged fields with "
        "dataset.ragged_batch(batch_size)."
    )
    batches = tb.pad_batch(source, 2, buckets=buckets, ragged=True)
    assert sorted(int(label) for _, y in batches for label in y) == list(range(6))


def _sliced_ragged() -> Any:
    """Elements of ``from_tensor_slices`` over a ragged tensor: each "tok" is a RaggedTensorSpec of ragged_rank 0
    (one tensor of its own length), float64 so that to_dataset casts it."""
    tok = tf.ragged.constant([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0], [7.0]], dtype=tf.float64)
    return tf.data.Dataset.from_tensor_slices({"tok": tok, "y": tf.constant([0, 1, 2, 3])})


@pytest.mark.parametrize("buckets", [None, [2], 2], ids=["plain", "boundaries", "count"])
@pytest.mark.parametrize("made", [False, True], ids=["dataset", "to_dataset"])
def test_slices_of_a_ragged_tensor_are_padded_as_the_tensors_they_are(buckets: Any, made: bool) -> None:
    source = tb.to_dataset(_sliced_ragged(), label="y") if made else _sliced_ragged()

    padded = list(tb.pad_batch(source, 2, buckets=buckets, pad_value=-1))

    rows: dict[int, list[float]] = {}
    for batch in padded:
        x, y = batch if made else (batch, batch["y"])
        assert not isinstance(x["tok"], tf.RaggedTensor)
        for row, label in zip(x["tok"].numpy().tolist(), y.numpy().tolist(), strict=True):
            rows[label] = row
    longest = {0: 2, 1: 1, 2: 3, 3: 1}
    assert sorted(rows) == [0, 1, 2, 3]
    assert all(len(rows[k]) >= longest[k] and set(rows[k][longest[k]:]) <= {-1.0} for k in rows)
    assert [rows[k][: longest[k]] for k in range(4)] == [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0], [7.0]]
    if made:
        assert x["tok"].dtype == tf.float32, "to_dataset cast the float64 values"


def test_pad_batch_keeps_a_tf_data_datasets_dtypes_and_casts_a_sources_floats() -> None:
    examples = [np.ones(i % 3 + 1) for i in range(5)]  # float64
    given = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=tf.TensorSpec((None,), tf.float64))
    assert tb.pad_batch(given, 2).element_spec.dtype == tf.float64  # as padded_batch keeps it
    assert tb.pad_batch(given, 2, buckets=[2]).element_spec.dtype == tf.float64
    built = tb.pad_batch(examples, 2)  # a source: built as to_dataset builds it
    assert built.element_spec.dtype == tf.float32
    assert [b.shape for b in built.as_numpy_iterator()] == [(2, 2), (2, 3), (1, 2)]


def test_drop_remainder_gives_a_static_batch_axis_on_every_route() -> None:
    lengths = [3, 7, 2, 9, 4, 4, 8, 1, 6, 5]

    def examples() -> Any:
        for i, n in enumerate(lengths):
            yield np.arange(n), i

    class Indexed:
        def __len__(self) -> int:
            return len(lengths)

        def __getitem__(self, i: int) -> Any:
            return np.arange(lengths[i]), i

    signature = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.int64))
    for source in (examples, Indexed(), tf.data.Dataset.from_generator(examples, output_signature=signature)):
        for buckets in (None, [4, 7]):
            ds = tb.pad_batch(source, 3, buckets=buckets, drop_remainder=True)
            assert ds.element_spec[0].shape[0] == 3 and ds.element_spec[1].shape == (3,), (source, buckets)
            assert all(x.shape[0] == 3 for x, _ in ds.as_numpy_iterator())


def test_a_one_field_tuple_stays_a_tuple_through_drop_remainder_and_ragged_slices() -> None:
    def examples() -> Any:
        for n in [3, 7, 2, 9, 4, 4, 8, 1, 6, 5]:
            yield (np.arange(n),)

    source = tf.data.Dataset.from_generator(examples, output_signature=(tf.TensorSpec((None,), tf.int64),))
    for drop in (False, True):
        spec = tb.pad_batch(source, 3, buckets=[4, 7], drop_remainder=drop).element_spec
        assert isinstance(spec, tuple) and len(spec) == 1
        assert spec[0].shape.as_list() == [3 if drop else None, None]
    sliced = tf.data.Dataset.from_tensor_slices((tf.ragged.constant([[1, 2], [3]], dtype=tf.int64),))
    batches = list(tb.pad_batch(sliced, 2).as_numpy_iterator())
    assert isinstance(batches[0], tuple) and batches[0][0].tolist() == [[1, 2], [3, 0]]

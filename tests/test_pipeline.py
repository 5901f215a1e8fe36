"""to_dataset: epochs, on_epoch_end, shuffle, executors, float policy, explicit specs, cleanup."""

from __future__ import annotations

import gc
import random
import threading
import time
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb

pytestmark = pytest.mark.timeout(120)


class Counting(keras.utils.PyDataset):
    """37 deterministic batches; counts epoch hooks; optional random per-item delay."""

    def __init__(self, n: int = 37, jitter_s: float = 0.0) -> None:
        super().__init__()
        self.n, self.jitter_s = n, jitter_s
        self.begins = self.ends = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if self.jitter_s:
            time.sleep(random.random() * self.jitter_s)
        return np.full((4, 2), i, np.float64), np.full((4,), i, np.int64)

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1


def _labels(ds: Any) -> list[int]:
    return [int(y.numpy()[0]) for _, y in ds]


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_on_epoch_end_runs_after_each_of_three_epochs(executor: str) -> None:
    seq = Counting()
    ds = tb.to_dataset(seq, executor=executor, workers=3)
    for epoch in range(3):
        assert _labels(ds) == list(range(37))
        assert seq.ends == epoch + 1 and seq.begins == epoch + 1


def test_on_epoch_end_runs_after_each_epoch_of_model_fit() -> None:
    seq = Counting()
    inputs = tb.keras_inputs(seq)
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    model.fit(tb.to_dataset(seq), epochs=3, verbose=0)
    assert seq.ends == 3


def test_on_epoch_end_state_changes_are_seen_in_the_next_epoch() -> None:
    class Reshuffling(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.order = np.arange(10)

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> Any:
            return np.array([self.order[i]])

        def on_epoch_end(self) -> None:
            self.order = self.order[::-1].copy()

    ds = tb.to_dataset(Reshuffling(), executor="thread", workers=4)
    assert [int(x.numpy()[0]) for x in ds] == list(range(10))
    assert [int(x.numpy()[0]) for x in ds] == list(range(9, -1, -1))


def test_thread_executor_keeps_source_order_with_uneven_item_times() -> None:
    ds = tb.to_dataset(Counting(jitter_s=0.01), executor="thread", workers=8)
    assert _labels(ds) == list(range(37))


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_shuffle_gives_a_new_permutation_each_epoch_reproducible_from_seed(executor: str) -> None:
    ds = tb.to_dataset(Counting(), shuffle=True, seed=7, executor=executor)
    first, second = _labels(ds), _labels(ds)
    assert sorted(first) == sorted(second) == list(range(37))
    assert first != second and first != list(range(37))
    again = tb.to_dataset(Counting(), shuffle=True, seed=7, executor=executor)
    assert _labels(again) == first and _labels(again) == second


def test_serial_and_thread_deliver_identical_content_across_epochs() -> None:
    a = tb.to_dataset(Counting(), executor="serial", shuffle=True, seed=3)
    b = tb.to_dataset(Counting(), executor="thread", shuffle=True, seed=3, workers=5)
    for _ in range(3):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())


def test_shuffled_arrays_visit_every_row_once_per_epoch() -> None:
    x = np.arange(50)
    ds = tb.to_dataset(x, shuffle=True, seed=1, batch_size=8)
    one = np.concatenate([b.numpy() for b in ds])
    two = np.concatenate([b.numpy() for b in ds])
    assert sorted(one) == sorted(two) == list(range(50))
    assert one.tolist() != two.tolist()


def test_cast_floats_none_keeps_float64_and_default_casts_to_floatx() -> None:
    seq = Counting()
    assert tb.to_dataset(seq).element_spec[0].dtype == tf.float32
    assert tb.to_dataset(seq, cast_floats=None).element_spec[0].dtype == tf.float64
    assert tb.keras_inputs(seq, cast_floats=None).dtype == "float64"


def test_cast_floats_follows_keras_floatx() -> None:
    old = keras.config.floatx()
    keras.config.set_floatx("float16")
    try:
        assert tb.to_dataset(Counting()).element_spec[0].dtype == tf.float16
        assert tb.keras_inputs(Counting()).dtype == "float16"
    finally:
        keras.config.set_floatx(old)


def test_element_spec_equals_the_given_spec_and_elements_are_converted() -> None:
    spec = tb.Spec.from_signature(
        (tf.TensorSpec((None, 2), tf.float16), tf.TensorSpec((None,), tf.int32)), batched=True
    )
    ds = tb.to_dataset(Counting(), spec=spec)
    assert ds.element_spec == spec.signature
    x, y = next(iter(ds))
    assert x.dtype == tf.float16 and y.dtype == tf.int32


def test_element_spec_equals_inferred_spec_after_float_policy() -> None:
    seq = Counting()
    spec = tb.infer_spec(seq)
    ds = tb.to_dataset(seq, cast_floats=None)
    assert ds.element_spec == spec.signature


def test_batch_size_batches_an_unbatched_python_source() -> None:
    def rows() -> Any:
        for i in range(10):
            yield {"x": np.full(3, i, np.float32), "y": i}

    ds = tb.to_dataset(rows, batched=False, batch_size=4)
    assert ds.element_spec["x"].shape.as_list() == [None, 3]
    assert [b["y"].numpy().tolist() for b in ds] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_indexed_dataset_knows_its_cardinality_for_keras_progress() -> None:
    ds = tb.to_dataset(Counting())
    assert int(ds.cardinality()) == 37


def test_dict_features_train_without_reshaping() -> None:
    class Multi(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> Any:
            n = 5 if i < 5 else 2
            rng = np.random.default_rng(i)
            return {"dense": rng.random((n, 4)), "ids": rng.integers(0, 9, (n, 3))}, rng.random((n, 1))

    source = Multi()
    inputs = tb.keras_inputs(source)
    assert set(inputs) == {"dense", "ids"} and inputs["ids"].dtype == "int64"
    assert inputs["dense"].name == "dense"
    merged = keras.layers.Concatenate()([inputs["dense"], keras.layers.Flatten()(keras.layers.Embedding(9, 2)(inputs["ids"]))])
    model = keras.Model(inputs, keras.layers.Dense(1)(merged))
    model.compile("adam", "mse")
    history = model.fit(tb.to_dataset(source), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_validate_all_checks_every_element_before_returning() -> None:
    class WiderAt(Counting):
        def __getitem__(self, i: int) -> Any:
            x, y = super().__getitem__(i)
            return (np.zeros((4, 3)) if i == 30 else x), y

    tb.to_dataset(WiderAt(), validate="peek", peek=2)  # the peek at 0 and 36 misses index 30
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.to_dataset(WiderAt(), validate="all", peek=2)
    assert info.value.index == 30 and info.value.path == "x"


def test_peeked_elements_are_checked_against_a_given_spec() -> None:
    spec = tb.Spec.from_signature((tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None,), tf.int64)))
    with pytest.raises(tb.SpecMismatchError, match=r"element 0 at x: expected shape \(None, 5\)"):
        tb.to_dataset(Counting(), spec=spec)


def _tfbridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tfbridge")]


def test_stopping_early_leaves_no_worker_thread_behind() -> None:
    ds = tb.to_dataset(Counting(jitter_s=0.002), executor="thread", workers=4)
    for _ in ds.take(3):
        pass
    for i, _ in enumerate(ds):
        if i == 2:
            break
    del ds
    gc.collect()
    for t in _tfbridge_threads():
        t.join(timeout=10)
    assert _tfbridge_threads() == []


def test_auto_picks_threads_for_a_waiting_source_and_serial_for_a_cheap_one() -> None:
    class Waiting(Counting):
        def __getitem__(self, i: int) -> Any:
            time.sleep(0.005)
            return super().__getitem__(i)

    assert tb.inspect(Waiting()).executor["name"] == "thread"
    assert tb.inspect(Counting()).executor["name"] == "serial"
    assert tb.inspect(np.zeros((3, 2))).executor["name"] == "native"

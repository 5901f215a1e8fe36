"""to_dataset over epochs: every element once per epoch in order (or in a fresh, reproducible permutation), the
source's epoch hooks once per epoch, the cardinality Keras reads, streams delivering each element as soon as it
exists, and ``model.fit`` (with and without ``steps_per_epoch``) seeing what it sees from an in-memory dataset.
The executors' agreement with each other is in test_executors.py."""

from __future__ import annotations

import functools
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _fault_sources import Batches
from _sources import Counting

import tfbridge as tb

pytestmark = pytest.mark.timeout(120)

EXECUTORS = ["serial", "thread", "process"]


class CountingPyDataset(keras.utils.PyDataset):
    """37 deterministic batches (features and labels filled with the index); counts epoch hooks."""

    def __init__(self, n: int = 37) -> None:
        super().__init__()
        self.n = n
        self.begins = self.ends = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.full((4, 2), i, np.float64), np.full((4,), i, np.int64)

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1


def _labels(ds: Any) -> list[int]:
    return [int(y.numpy()[0]) for _, y in ds]


# ---- epochs and hooks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_on_epoch_begin_and_end_run_once_per_epoch_around_every_element_in_order(executor: str) -> None:
    seq = CountingPyDataset()
    ds = tb.to_dataset(seq, executor=executor, workers=3)
    for epoch in range(3):
        assert _labels(ds) == list(range(37))
        assert seq.ends == epoch + 1 and seq.begins == epoch + 1


def test_on_epoch_end_runs_after_each_epoch_of_model_fit() -> None:
    seq = CountingPyDataset()
    inputs = tb.keras_inputs(seq)
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    model.fit(tb.to_dataset(seq), epochs=3, verbose=0)
    assert seq.ends == 3


def test_indexed_dataset_knows_its_cardinality_for_keras_progress() -> None:
    assert int(tb.to_dataset(CountingPyDataset()).cardinality()) == 37


# ---- shuffle ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_shuffle_gives_a_new_permutation_each_epoch_reproducible_from_seed(executor: str) -> None:
    ds = tb.to_dataset(CountingPyDataset(), shuffle=True, seed=7, executor=executor)
    first, second = _labels(ds), _labels(ds)
    assert sorted(first) == sorted(second) == list(range(37))
    assert first != second and first != list(range(37))
    again = tb.to_dataset(CountingPyDataset(), shuffle=True, seed=7, executor=executor)
    assert _labels(again) == first and _labels(again) == second


def test_shuffled_arrays_visit_every_row_once_per_epoch() -> None:
    x = np.arange(50)
    ds = tb.to_dataset(x, shuffle=True, seed=1, batch_size=8)
    one = np.concatenate([b.numpy() for b in ds])
    two = np.concatenate([b.numpy() for b in ds])
    assert sorted(one) == sorted(two) == list(range(50))
    assert one.tolist() != two.tolist()


# ---- streams ----------------------------------------------------------------------------------------------


def test_a_stream_delivers_an_element_before_the_next_one_exists() -> None:
    consumed = threading.Event()

    def feed() -> Any:  # the next element only exists once the previous one was consumed
        yield np.zeros((2, 2))
        consumed.wait(timeout=30)
        yield np.ones((2, 2))

    ds = tb.to_dataset(feed, peek=1)
    consumed.set()  # the peek's pass; the dataset's own pass starts below
    consumed.clear()
    it = iter(ds)
    start = time.perf_counter()
    first = next(it)
    waited = time.perf_counter() - start
    consumed.set()
    assert float(first.numpy()[0, 0]) == 0.0 and float(next(it).numpy()[0, 0]) == 1.0
    assert waited < 25, "the first element waited for the second (which waits for the first)"


# ---- the end of an epoch --------------------------------------------------------------------------------


def _stream() -> Iterator[Any]:
    for i in range(2000):
        time.sleep(0.0003)  # an epoch of about a second: far enough from the model thread's next wake-up
        yield np.full((i % 50 + 1,), i % 7, np.int32)


class _Rows:
    def __len__(self) -> int:
        return 2000

    def __getitem__(self, i: int) -> Any:
        time.sleep(0.0003)
        return np.full((8,), i % 7, np.float32)


_ROUTES = {
    "pad_batch with bucket boundaries": lambda: tb.pad_batch(_stream, 32, buckets=[10, 20, 40]),
    "generator-function stream": lambda: tb.to_dataset(_stream, batched=False),
    "indexed source": lambda: tb.to_dataset(_Rows(), batched=False, executor="serial"),
}


def _end_gaps(dataset: Any, epochs: int) -> list[float]:
    """Seconds from the last element of each epoch to the end of its pass, each epoch a new call of a compiled
    loop (a custom training loop's ``for batch in dataset``)."""

    @tf.function
    def epoch() -> Any:
        last = tf.timestamp()
        for element in dataset:
            with tf.control_dependencies(tf.nest.flatten(element)):
                last = tf.timestamp()
        return tf.timestamp() - last

    return [float(epoch()) for _ in range(epochs)]


@pytest.mark.parametrize("route", list(_ROUTES))
def test_a_compiled_loop_ends_each_epoch_soon_after_its_last_element(route: str) -> None:
    # with tf.data's autotuning model on, a pass here ended when the model's thread next woke, at 10 ms x
    # (2**k - 1) after it began: 0.3 to 2.5 s after the last element on these routes (benchmarks/RESULTS.md)
    dataset = _ROUTES[route]()
    assert dataset.options().autotune.enabled is False
    gaps = _end_gaps(dataset, 8)
    assert max(gaps) < 0.25, [f"{g * 1e3:.0f} ms" for g in gaps]


def test_a_dataset_whose_pipeline_sets_autotuning_keeps_it() -> None:
    options = tf.data.Options()
    options.autotune.enabled = True
    chosen = tf.data.Dataset.range(5).with_options(options)
    assert tb.to_dataset(chosen).options().autotune.enabled is True
    assert tb.pad_batch(chosen.map(lambda i: tf.fill([i], i)), 2).options().autotune.enabled is True
    assert tb.to_dataset(tf.data.Dataset.range(5)).options().autotune.enabled is False


# ---- model.fit with steps_per_epoch ---------------------------------------------------------------------


class _Recording(keras.Model):
    """Records the label id of every batch its train step sees (graph mode, as fit runs it)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.seen: list[Any] = []

    def call(self, x: Any) -> Any:
        return self.dense(x)

    def train_step(self, data: Any) -> Any:
        _, y = data

        def note(y: Any) -> Any:
            self.seen.append(int(y.numpy()[0, 0]))
            return np.float32(0)

        return {"loss": tf.py_function(note, [y], tf.float32)}


class _EpochMarks(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.model.seen.append("|")


def _fit(ds: Any, steps: int, epochs: int) -> tuple[list[Any], int]:
    model = _Recording()
    model.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ds, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[_EpochMarks()])
    return model.seen, sum("ran out of data" in str(w.message) for w in caught)


@functools.cache
def _fit_in_memory(steps: int, epochs: int, known_length: bool) -> tuple[list[Any], int]:
    """What Keras sees from an in-memory dataset of the same batches (computed once per case)."""
    return _fit(_in_memory(known_length), steps, epochs)


def _in_memory(known_length: bool) -> Any:
    x = np.repeat(np.arange(10, dtype=np.float32)[:, None, None], 2, 1) * np.ones((1, 2, 3), np.float32)
    y = x[..., :1]
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds if known_length else ds.filter(lambda *_: True)


# Keras 3 with a dataset of known length: a shorter steps_per_epoch continues the same pass in the next epoch and
# starts a new pass once the data is used up (that epoch is cut short, with Keras's "ran out of data" warning);
# a longer one ends every epoch at the end of the data, with the warning.
_SHORTER = [0, 1, 2, 3, "|", 4, 5, 6, 7, "|", 8, 9, "|", 0, 1, 2, 3, "|"]
_LONGER = ([*range(10), "|"]) * 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", [4, 15], ids=["shorter", "longer"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_fit_with_steps_per_epoch_sees_what_it_sees_with_an_in_memory_dataset(executor: str, steps: int) -> None:
    epochs = 4 if steps == 4 else 3
    expected = _fit_in_memory(steps, epochs, known_length=True)
    assert expected[0] == (_SHORTER if steps == 4 else _LONGER), "Keras itself behaves as described above"
    source = Batches()
    assert _fit(tb.to_dataset(source, executor=executor, workers=2), steps, epochs) == expected
    if steps == 4:  # one whole pass; the second was still being read when fit returned
        assert source.begins == 2 and source.ends in (1, 2)
    else:  # every epoch was one whole pass
        assert source.begins == source.ends == epochs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", [4, 15], ids=["shorter", "longer"])
def test_fit_with_steps_per_epoch_on_a_stream_sees_what_it_sees_with_an_unsized_in_memory_dataset(
    steps: int,
) -> None:
    def batches() -> Iterator[Any]:
        source = Batches()
        for i in range(len(source)):
            yield source[i]

    epochs = 4 if steps == 4 else 3
    expected = _fit_in_memory(steps, epochs, known_length=False)
    assert expected[0] == (_SHORTER if steps == 4 else _LONGER), "Keras learns the length when the data runs out"
    assert _fit(tb.to_dataset(batches), steps, epochs) == expected


class _Validated(keras.Model):
    """A real linear model that also records the label id of every batch it trains ("t") or validates on ("v")."""

    def __init__(self) -> None:
        super().__init__(name="validated")
        self.dense = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")
        self.seen: list[tuple[str, int]] = []

    def call(self, x: Any) -> Any:
        return self.dense(x)[:, 0]

    def _note(self, tag: str, y: Any) -> None:
        def note(y: Any) -> Any:
            self.seen.append((tag, int(y.numpy()[0])))
            return np.float32(0)

        tf.py_function(note, [y], tf.float32)

    def train_step(self, data: Any) -> Any:
        self._note("t", data[1])
        return super().train_step(data)

    def test_step(self, data: Any) -> Any:
        self._note("v", data[1])
        return super().test_step(data)


def _fit_validating_on_itself(executor: str, steps: int, epochs: int) -> tuple[dict[str, Any], list[Any], Counting]:
    source = Counting(300)
    ds = tb.to_dataset(source, executor=executor, workers=2, batched=True)
    model = _Validated()
    model.compile(keras.optimizers.SGD(1e-6), "mse")
    history = model.fit(ds, validation_data=ds, steps_per_epoch=steps, epochs=epochs, verbose=0)
    return history.history, model.seen, source


@pytest.mark.timeout(180)
def test_fit_validating_on_its_training_dataset_with_a_shorter_steps_per_epoch_works_on_worker_processes() -> None:
    """Keras keeps the training pass open between epochs and validates on the same dataset meanwhile: two passes
    at the same time, the second one whole each epoch."""
    history, seen, source = _fit_validating_on_itself("process", steps=4, epochs=3)
    expected = []
    for epoch in range(3):
        expected += [("t", i) for i in range(4 * epoch, 4 * epoch + 4)] + [("v", i) for i in range(300)]
    assert seen == expected
    assert source.begins == 4 and source.ends == 3, "three whole validation passes; the training pass is open"
    serial_history, serial_seen, _ = _fit_validating_on_itself("serial", steps=4, epochs=3)
    assert serial_seen == seen
    assert len(history["val_loss"]) == 3
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history[key], serial_history[key], rtol=1e-6)


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_pydataset_counted_by_num_batches_is_indexed_with_its_epoch_hooks(executor: str) -> None:
    """A Keras 3 PyDataset may give its length by ``num_batches`` instead of ``__len__``: it is indexed like one
    with ``__len__`` (known cardinality, shuffle, on_epoch_end after each epoch), not read as a stream."""
    from _keras_sources import CountedByNumBatches

    source = CountedByNumBatches(5)
    ds = tb.to_dataset(source, executor=executor, workers=2 if executor == "process" else None)
    assert int(ds.cardinality()) == 5
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(ds, epochs=3, verbose=0)
    assert source.ends == 3
    assert [int(y[0]) for _, y in ds] == [0, 1, 2, 3, 4]
    shuffled = tb.to_dataset(CountedByNumBatches(5), shuffle=True, seed=0)
    assert sorted(int(y[0]) for _, y in shuffled) == [0, 1, 2, 3, 4]
    with pytest.raises(tb.TfBridgeError, match=r"^num_batches of the source .*must be a non-negative int"):
        tb.to_dataset(CountedByNumBatches(-1))


def test_an_infinite_pydataset_counted_by_num_batches_none_is_a_stream() -> None:
    from _keras_sources import CountedByNumBatches

    ds = tb.to_dataset(CountedByNumBatches(None))
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    assert [int(y[0]) for _, y in ds.take(7)] == list(range(7))

"""Behaviours found by review: each failed before its fix."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb

pytestmark = pytest.mark.timeout(180)


class DiesBetweenEpochs:
    def __init__(self) -> None:
        self.epoch = 0

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        return np.full((2, 2), i, np.float32)

    def on_epoch_end(self) -> None:
        self.epoch += 1


def test_worker_dead_between_epochs_is_worker_died_and_the_next_epoch_recovers() -> None:
    source = DiesBetweenEpochs()
    ds = tb.to_dataset(source, executor="process", workers=2)
    assert len(list(ds)) == 6
    from tfbridge.executors import processes

    pools = [o for o in processes._LIVE if o._pool]
    for pool in pools:
        for w in pool._pool:
            os.kill(w.proc.pid, signal.SIGKILL)
            w.proc.wait()
    with pytest.raises(tf.errors.OpError, match="WorkerDiedError"):
        list(ds)
    assert [int(x.numpy()[0, 0]) for x in ds] == list(range(6))


class Bf16:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> Any:
        import ml_dtypes

        return np.full((256, 256), i, dtype=ml_dtypes.bfloat16)  # 128 KB: travels through shared memory


def test_bfloat16_arrays_survive_shared_memory() -> None:
    got = [float(x.numpy()[0, 0]) for x in tb.to_dataset(Bf16(), executor="process", workers=2)]
    assert got == [0.0, 1.0, 2.0, 3.0]


def test_zipped_batched_datasets_are_batched() -> None:
    a = tf.data.Dataset.from_tensor_slices(np.zeros((8, 3))).batch(4)
    assert tb.infer_spec(tf.data.Dataset.zip((a, a))).batched
    assert tb.keras_inputs(tf.data.Dataset.zip((a, a))).shape == (None, 3)


def test_pad_batch_pads_bool_masks_and_refuses_a_bad_pad_value() -> None:
    def rows() -> Any:
        for n in (1, 3):
            yield {"ids": np.arange(n), "mask": np.ones(n, bool)}

    batch = next(iter(tb.pad_batch(rows, 2)))
    assert batch["mask"].numpy().tolist() == [[True, False, False], [True, True, True]]
    with pytest.raises(tb.TfBridgeError, match=r"pad_value -1.5 does not fit a field of dtype int64"):
        tb.pad_batch(rows, 2, pad_value={"ids": -1.5, "mask": False})


def test_pad_batch_bucket_count_refuses_to_use_up_a_one_shot_iterator() -> None:
    it = iter([np.arange(n) for n in (1, 2, 3, 4)])
    with pytest.raises(tb.TfBridgeError, match="would use up a one-shot iterator"):
        tb.pad_batch(it, 2, buckets=2)


def test_validate_all_on_a_labelled_one_shot_iterator_keeps_every_element() -> None:
    it = iter([{"x": np.zeros((2, 3)), "y": np.arange(2) + i} for i in range(5)])
    with pytest.warns(tb.TfBridgeWarning):
        ds = tb.to_dataset(it, label="y", validate="all")
    assert [int(y.numpy()[0]) for _, y in ds] == [0, 1, 2, 3, 4]


def test_validate_none_still_converts_ragged_fields() -> None:
    batches = [([[1, 2], [3]],), ([[4], [5, 6, 7]],)]
    got = [x.to_list() for (x,) in tb.to_dataset(batches, validate="none")]
    assert got == [[[1, 2], [3]], [[4], [5, 6, 7]]]


def test_unknown_executor_is_refused_for_every_kind_of_source() -> None:
    for source in (np.zeros((4, 2)), tf.data.Dataset.range(3)):
        with pytest.raises(tb.TfBridgeError, match="executor must be one of"):
            tb.to_dataset(source, executor="proces")


def test_a_stream_delivers_an_element_before_the_next_one_exists() -> None:
    import threading

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

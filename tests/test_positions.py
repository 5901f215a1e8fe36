"""The index-driven route (sources/_positions.py): small elements of varying length travel in chunks, packed,
and come out exactly as the source made them; a dataset dropped while a step runs leaves nothing behind."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge.sources import _positions


class Varying:
    """Examples whose fields vary in length (ints, float rows, words) beside fixed ones."""

    def __len__(self) -> int:
        return 500

    def __getitem__(self, i: int) -> Any:
        return {
            "ids": np.arange(i % 9, dtype=np.int32) + i,
            "rows": np.full((1 + i % 4, 2), i, np.float32),
            "words": np.array([f"w{i}-{j}".encode() for j in range(i % 3)], dtype=object),
            "id": np.int64(i),
        }


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_varying_small_examples_travel_packed_in_chunks_and_come_out_as_made(
    executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    real = _positions.Passes.fetch

    def counting(self: Any, info: Any, position: Any) -> Any:
        out = real(self, info, position)
        steps.append(int(out[0]))
        return out

    monkeypatch.setattr(_positions.Passes, "fetch", counting)
    source = Varying()
    ds = tb.to_dataset(source, batched=False, executor=executor, workers=2)
    got = list(ds)
    assert len(got) == 500
    for i, element in enumerate(got):
        want = source[i]
        assert element["id"].numpy() == i
        np.testing.assert_array_equal(element["ids"].numpy(), want["ids"])
        np.testing.assert_array_equal(element["rows"].numpy(), want["rows"])
        assert element["words"].numpy().tolist() == want["words"].tolist()
    assert ds.element_spec["rows"] == tf.TensorSpec((None, 2), tf.float32)
    assert max(steps) > 1, "more than one element per Python step"
    assert len(steps) < 500 / 4


def test_a_dataset_dropped_while_its_pass_runs_leaves_no_thread_and_no_error(recwarn: Any) -> None:
    ds = tb.to_dataset(Varying(), batched=False, executor="thread", workers=2)
    it = iter(ds)
    next(it)
    del ds, it
    gc.collect()
    unraisable = [w for w in recwarn if "generator already executing" in str(w.message)]
    assert unraisable == []


class _Rows:
    def __len__(self) -> int:
        return 400

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((4, 256), i, np.float32)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["thread", "serial"])
def test_a_dataset_dropped_part_way_leaves_neither_its_passes_nor_its_threads_behind(executor: str) -> None:
    # TensorFlow files the functions a traced numpy_function calls under the global graph for good: they must not
    # hold the passes, or an abandoned pass's threads and read-ahead would outlive the dataset
    import threading
    import weakref

    before = set(threading.enumerate())
    ds = tb.to_dataset(_Rows(), executor=executor, workers=8, batched=True)
    (passes,) = _positions.passes_in(ds)
    gone = weakref.ref(passes)
    del passes
    it = iter(ds)
    pull = tf.function(lambda iterator: iterator.get_next())  # a compiled loop, as Keras's train step pulls
    for _ in range(5):
        pull(it)
    started = set(threading.enumerate()) - before
    del ds, it, pull
    gc.collect()
    assert gone() is None, "the passes went with their dataset"
    for thread in started:
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{thread.name} outlived its dataset"


def test_the_graph_of_a_pass_stays_small_whatever_the_size_of_a_fixed_field() -> None:
    """The answer of a step after a failed end is made in the graph as a fill, not stored as a constant as big
    as the field (a field of hundreds of MB would pass protobuf's 2 GB limit)."""

    class Big:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return np.full((512, 512, 3), i, np.float32), np.int32(i)

    ds = tb.to_dataset(Big(), batched=False, executor="serial")
    assert len(ds._as_serialized_graph().numpy()) < 500_000  # one field is 3 MB
    assert [int(y) for _, y in ds] == [0, 1, 2]

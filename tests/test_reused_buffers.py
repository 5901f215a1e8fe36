"""Sources that fill one buffer and return it (or views of it) for every element: each element keeps its own
values, on every route, as if the source returned a new array each time."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import tfbridge as tb
from tfbridge import pipeline


class OneBuffer:
    """``n`` examples (float32[3] filled with the index, the index), written into one buffer."""

    def __init__(self, n: int = 10) -> None:
        self.n, self.buffer = n, np.zeros(3, np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        self.buffer[:] = index
        return self.buffer, index


class OneBatchBuffer(OneBuffer):
    """``n`` batches of 4 rows, written into one buffer (and returned as a view of it)."""

    def __init__(self, n: int = 10) -> None:
        self.n, self.buffer = n, np.zeros((8, 3), np.float32)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        self.buffer[:] = index
        return self.buffer[:4], np.full(4, index)


class OneTokenBuffer(OneBuffer):
    """``n`` token sequences of 1 to 5 ids (each the index), views of one buffer."""

    def __init__(self, n: int = 12) -> None:
        self.n, self.buffer = n, np.zeros(5, np.int32)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        length = 1 + index % 5
        self.buffer[:length] = index
        return self.buffer[:length], index


class WaitingOneBuffer(OneBuffer):
    """OneBuffer whose elements wait 5 ms (as on a disk or a network): threads would be chosen for it."""

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        import time

        time.sleep(0.005)
        return super().__getitem__(index)


def _filled(n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    buffer = np.zeros((4, 3), np.float32)
    for i in range(n):
        buffer[:] = i
        yield buffer, np.full(4, i)


def _firsts(ds: Any) -> list[list[float]]:
    return [np.asarray(x)[..., 0].reshape(-1).tolist() for x, _ in ds.as_numpy_iterator()]


@pytest.mark.parametrize("executor", ["serial", "process", "auto"])
def test_examples_from_one_buffer_keep_their_values(executor: str) -> None:
    want = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    assert _firsts(tb.to_dataset(OneBuffer(), batch_size=4, executor=executor)) == want
    unbatched = tb.to_dataset(OneBuffer(), batched=False, executor=executor)
    assert [float(x[0]) for x, _ in unbatched.as_numpy_iterator()] == [float(i) for i in range(10)]


def test_batches_from_one_buffer_keep_their_values_and_pad_batch_buckets_too() -> None:
    ds = tb.to_dataset(OneBatchBuffer(), executor="serial")
    assert [row[0] for row in _firsts(ds)] == [float(i) for i in range(10)]
    assert all(row == [row[0]] * 4 for row in _firsts(ds))
    padded = tb.pad_batch(OneTokenBuffer(), 4, buckets=[3], executor="serial")
    rows = [(list(x), int(y)) for xs, ys in padded.as_numpy_iterator() for x, y in zip(xs, ys, strict=True)]
    assert sorted(y for _, y in rows) == list(range(12))
    assert all(x == [y] * (1 + y % 5) + [0] * (len(x) - 1 - y % 5) for x, y in rows), rows


def test_auto_reads_one_buffer_in_one_thread_and_says_why() -> None:
    p = pipeline.plan(OneBuffer(), batched=False)
    assert p.detach, "the peek saw every element in the one buffer"
    assert p.choice.name != "thread"
    assert pipeline.plan(OneTokenBuffer(), batched=False).detach, "views of one buffer too"
    waiting = pipeline.plan(WaitingOneBuffer(), batched=False)
    assert waiting.choice.name == "serial"
    assert "returns the same buffer (or views of it) for every element" in waiting.choice.reason
    assert "reads it in one thread (threads would fill the buffer at once)" in waiting.choice.reason
    assert not pipeline.plan(np.arange(30.0).reshape(10, 3), batched=False).detach
    fresh = pipeline.plan([np.full(3, i, np.float32) for i in range(10)], batched=False)
    assert not fresh.detach, "new arrays for each element: nothing is copied"


def test_threads_asked_for_over_one_buffer_are_kept_with_a_warning() -> None:
    message = (
        r"returns the same buffer \(or views of it\) for every element, filling it again for the next: tfbridge "
        r"copies each element as it is made, but with executor='thread' several threads fill that buffer at once"
    )
    with pytest.warns(tb.TfBridgeWarning, match=message):
        tb.to_dataset(OneBuffer(), batched=False, executor="thread")


def test_a_one_shot_generator_filling_one_buffer_replays_its_peeked_elements_as_they_were() -> None:
    stream = _filled(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tb.TfBridgeWarning)  # batches or examples: said elsewhere
        tb.keras_inputs(stream)  # peeks 8, kept for the dataset
        got = _firsts(tb.to_dataset(stream))
    assert [row[0] for row in got] == [float(i) for i in range(12)]


def test_a_generator_function_filling_one_buffer_keeps_every_element() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tb.TfBridgeWarning)
        got = _firsts(tb.to_dataset(lambda: _filled(20)))
    assert [row[0] for row in got] == [float(i) for i in range(20)]


def test_views_that_nothing_overwrites_are_not_taken_for_one_buffer() -> None:
    big = np.asfortranarray(np.arange(400.0).reshape(100, 4))  # rows of a Fortran-ordered array: interleaved
    mask = np.ones(4, np.float32)

    class Views:
        def __len__(self) -> int:
            return 100

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return big[i], big[:, i % 4], mask  # a row, a column, one constant array for all

    assert not pipeline.plan(Views(), batched=False).detach
    assert not pipeline.plan(lambda: ((big[i], mask) for i in range(100)), batched=False).detach


def test_a_one_shot_iterator_of_fresh_arrays_is_buffered_without_copies() -> None:
    arrays = [np.full(3, i, np.float32) for i in range(10)]
    stream = iter(arrays)
    assert tb.validate(stream, tb.infer_spec(iter(arrays), batched=False)) == 10
    from tfbridge.sources.stream import _REPLAYS

    replay = _REPLAYS.get(id(stream))
    assert replay is not None and not replay.reused_memory
    assert all(a is b for a, b in zip(replay._buffer, arrays, strict=True)), "the arrays themselves are kept"

"""A source object's peek is remembered while it lives: later calls reuse its findings, never its elements."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import keras
import numpy as np
import pytest

import tfbridge as tb


class Counted(keras.utils.PyDataset):
    """Five batches; counts the __getitem__ calls."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.calls = scale, [0]

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> Any:
        self.calls[0] += 1
        return np.full((4, 3), i * self.scale, np.float32), np.zeros((4,), np.float32)


def test_to_dataset_then_keras_inputs_reads_the_peek_once() -> None:
    seq = Counted()
    ds = tb.to_dataset(seq, executor="serial")
    after_first = seq.calls[0]
    assert after_first == 5  # the peek (every one of 5 batches)
    inputs = tb.keras_inputs(seq)
    assert seq.calls[0] == after_first  # reused
    assert tuple(inputs.shape) == (None, 3)
    tb.to_dataset(seq, executor="serial")  # a validation source passed again: no new peek
    assert seq.calls[0] == after_first
    assert sum(1 for _ in ds) == 5
    assert seq.calls[0] == after_first + 5  # the epoch itself


def test_a_three_epoch_fit_with_validation_reads_each_batch_once_per_epoch_plus_one_peek() -> None:
    train, val = Counted(), Counted()
    model = keras.Sequential([tb.keras_inputs(train), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(
        tb.to_dataset(train, executor="serial"),
        validation_data=tb.to_dataset(val, executor="serial"),
        epochs=3,
        verbose=0,
    )
    assert train.calls[0] == 5 + 3 * 5
    assert val.calls[0] == 5 + 3 * 5


def test_a_rebound_attribute_or_a_different_peek_reads_again() -> None:
    seq = Counted()
    assert tb.infer_spec(seq).structure[0].shape == (None, 3)
    seq.scale = 2.0  # changed preprocessing: the findings about the old object are not reused
    tb.infer_spec(seq)
    assert seq.calls[0] == 10
    tb.infer_spec(seq, peek=2)  # another peek size is another question
    assert seq.calls[0] == 12
    tb.infer_spec(seq, peek=2)
    assert seq.calls[0] == 12


def test_remembered_findings_do_not_keep_the_object_or_its_elements_alive() -> None:
    seq = Counted()
    tb.infer_spec(seq)
    ref = weakref.ref(seq)
    del seq
    gc.collect()
    assert ref() is None
    from tfbridge.sources import _memo

    assert all(entry[0]() is not None for entry in _memo._MEMO.values())


def test_generator_functions_are_remembered_but_lists_are_peeked_each_time() -> None:
    calls = [0]

    def gen() -> Any:
        calls[0] += 1
        for i in range(4):
            yield np.float32(i), np.float32(i)

    tb.infer_spec(gen)
    tb.keras_inputs(gen)
    assert calls[0] == 1
    items = [(np.ones((2, 3), np.float32), np.ones((2,), np.float32))]
    assert tb.infer_spec(items).structure[0].shape == (None, 3)
    items[0] = (np.ones((2, 5), np.float32), np.ones((2,), np.float32))
    assert tb.infer_spec(items).structure[0].shape == (None, 5)


class BigCalls:
    """Elements of ``mb`` MB; records each index it is asked for."""

    def __init__(self, mb: int, n: int = 6) -> None:
        self.mb, self.n = mb, n
        self.calls: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        self.calls.append(i)
        return np.full((self.mb << 18,), i, np.float32)


def test_big_elements_are_timed_once_more_in_memory_freed_just_before() -> None:
    from tfbridge.sources._base import timed

    big = BigCalls(12)
    peek = timed(big.__getitem__, [0, 2, 5], again=True)
    assert big.calls == [0, 2, 5, 0, 0], "the first index made twice more: the first result dropped, the second timed"
    assert peek.count == 3 and peek.again is not None and len(peek.again) == 3
    small = BigCalls(1)
    assert timed(small.__getitem__, [0, 2, 5], again=True).again is None and small.calls == [0, 2, 5]
    once = BigCalls(12)
    assert timed(once.__getitem__, [0, 2, 5]).again is None and once.calls == [0, 2, 5]  # a stream: read once


def test_the_steady_cost_is_the_lower_of_the_peek_and_the_element_made_again() -> None:
    from tfbridge.sources._base import Peek

    peek = Peek(samples=[(i, None) for i in range(4)], costs=[(0.08, 0.07, 0.0, 10)] * 4)
    peek.wall_s, peek.cpu_s, peek.nbytes = 0.32, 0.28, 40
    assert peek.steady() == pytest.approx((0.24, 0.21, 3, 30, 0.0))  # the slowest left out
    peek.again = (0.01, 0.009, 0.001)  # the peek paid for fresh memory: a pass pays this
    assert peek.steady() == pytest.approx((0.03, 0.027, 3, 30, 0.003))
    peek.again = (0.2, 0.1, 0.0)  # dearer made again: the peek's figures stand
    assert peek.steady() == pytest.approx((0.24, 0.21, 3, 30, 0.0))

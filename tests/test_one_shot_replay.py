"""One-shot iterators: what tfbridge peeks is replayed by later calls, and kept no longer than it can be used."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

import tfbridge as tb

_EIGHT_MB = 1_000_000  # float64 values


def test_peeked_list_iterators_dropped_unreplayed_free_their_arrays() -> None:
    """list iterators cannot be weakly referenced: their replay must still go when the iterator does."""
    refs = []
    for _ in range(5):
        array = np.ones(_EIGHT_MB)
        refs.append(weakref.ref(array))
        it = iter([array] * 3)
        del array
        assert tb.infer_spec(it).batched  # peeks all three, which now wait in the replay buffer
        del it
    gc.collect()
    assert [r() for r in refs] == [None] * 5


def test_peeked_generators_dropped_unreplayed_free_their_arrays() -> None:
    refs: list[weakref.ref[np.ndarray]] = []

    def arrays() -> Iterator[Any]:
        for _ in range(3):
            array = np.ones(_EIGHT_MB)
            refs.append(weakref.ref(array))
            yield array

    for _ in range(5):
        gen = arrays()
        tb.infer_spec(gen, batched=True)
        del gen
    gc.collect()
    assert len(refs) == 15 and [r() for r in refs] == [None] * 15


def test_replayed_buffer_is_released_while_the_iterator_lives() -> None:
    refs: list[weakref.ref[np.ndarray]] = []

    def arrays() -> Iterator[Any]:
        for _ in range(4):
            array = np.ones((2, 1000))
            refs.append(weakref.ref(array))
            yield array

    gen = arrays()
    inputs = tb.keras_inputs(gen)  # peeks all four
    assert inputs.shape == (None, 1000)
    assert sum(1 for _ in tb.to_dataset(gen)) == 4  # replays all four, nothing lost or repeated
    gc.collect()
    assert [r() for r in refs] == [None] * 4  # nothing kept once replayed, though gen is still here
    assert list(gen) == []


def test_peeked_elements_are_replayed_by_the_next_call_once() -> None:
    it = iter([np.full((2, 3), i) for i in range(5)])
    assert tb.infer_spec(it, peek=3).batched
    assert tb.validate(it) == 5  # reads ahead without consuming
    got = [int(x[0, 0]) for x in tb.to_dataset(it).as_numpy_iterator()]
    assert got == [0, 1, 2, 3, 4]

"""The timing behind ``tfbridge bench`` and the benchmarks (tfbridge._bench): whole passes when a pass is shorter
than the window, a window inside a longer (or endless) pass, one pass of a source that can be read once, and
failures as one line naming the error. Short windows: every test takes well under a second."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge._bench import Measurement, measure, plain_from_generator

_WINDOW_S = 0.05


def _measure(make: Any, *, warmup: int = 5, repeats: int = 2) -> Measurement:
    return measure("m", make, repeats=repeats, warmup=warmup, window_s=_WINDOW_S, min_elements=1)


class _Twenty:
    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((3,), i, np.float32)


class _BadAt15(_Twenty):
    def __getitem__(self, i: int) -> np.ndarray:
        if i == 15:
            raise ValueError(f"bad index {i}")
        return super().__getitem__(i)


_SIGNATURE = tf.TensorSpec((3,), tf.float32)


def _finite(m: Measurement) -> None:
    assert m.error is None, m.error
    assert m.rates and all(math.isfinite(r) and r > 0 for r in m.rates), m.rates


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: list(range(20)), id="python-list"),
        pytest.param(lambda: tf.data.Dataset.range(20), id="tf-data"),
        pytest.param(lambda: plain_from_generator(_Twenty(), _SIGNATURE), id="from-generator"),
        pytest.param(lambda: tb.to_dataset(_Twenty(), batched=False, executor="thread"), id="tfbridge-thread"),
    ],
)
def test_a_pass_shorter_than_the_window_is_timed_over_whole_passes(make: Any) -> None:
    m = _measure(make)

    _finite(m)
    assert [t.passes >= 1 and not t.once for t in m.timings] == [True, True]
    assert m.timed_over.endswith(("whole pass", "whole passes"))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: itertools.count(), id="python-iterator"),
        pytest.param(lambda: tf.data.Dataset.range(10).repeat(), id="tf-data"),
    ],
)
def test_an_endless_source_is_timed_over_a_window_inside_its_one_pass(make: Any) -> None:
    m = _measure(make)

    _finite(m)
    assert m.timed_over == "a window inside one pass"


def test_a_plain_iterator_is_timed_over_its_one_pass() -> None:
    m = _measure(lambda: iter(range(20)))

    _finite(m)
    assert m.timed_over == "one pass: the source can be read once"


def test_a_dataset_whose_later_passes_are_empty_is_timed_over_its_first_pass() -> None:
    def make() -> Any:
        with pytest.warns(tb.TfBridgeWarning, match="is a one-shot iterator"):
            return tb.to_dataset(iter([np.full((3,), i, np.float32) for i in range(20)]), batched=False)

    m = _measure(make)

    _finite(m)
    assert m.timed_over == "one pass: the source can be read once"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(list, "ValueError: the source gave no elements: there is nothing to time", id="empty"),
        pytest.param(
            lambda: iter(range(3)),
            "ValueError: the source can be read once and gave only 3 elements, all taken by the warm-up: there is "
            "nothing left to time",
            id="one-shot-shorter-than-the-warm-up",
        ),
        pytest.param(
            lambda: plain_from_generator(_BadAt15(), _SIGNATURE), "ValueError: bad index 15", id="from-generator"
        ),
        pytest.param(
            lambda: tb.to_dataset(_BadAt15(), batched=False, executor="serial", peek=2),
            "SourceError: element 15: ValueError: bad index 15",
            id="tfbridge",
        ),
    ],
)
def test_a_failure_is_one_line_naming_the_error_and_no_figure(make: Any, message: str) -> None:
    m = _measure(make)

    assert m.error == message
    assert m.rates == []

"""One ExecutorOptions value (or its name as shorthand) and label= at every entry point that takes a source."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tfbridge as tb
from tests._sources import Listed
from tfbridge import executors


def _frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.random(n), "b": rng.integers(0, 5, n), "y": np.arange(n) % 2})


def test_options_are_a_frozen_keyword_only_value() -> None:
    options = tb.ExecutorOptions("thread", workers=3, timeout=2.5)
    assert (options.name, options.workers, options.timeout, options.ray_address) == ("thread", 3, 2.5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.workers = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        tb.ExecutorOptions("thread", 3)  # type: ignore[misc]
    assert tb.ExecutorOptions() == tb.ExecutorOptions("auto")
    recycled = tb.ExecutorOptions("process", max_elements_per_worker=500, max_worker_rss=2 * 2**30)
    assert (recycled.max_elements_per_worker, recycled.max_worker_rss) == (500, 2 * 2**30)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"name": "bogus"},
            "executor must be one of 'serial', 'thread', 'process', 'ray', 'auto'. Received: 'bogus'",
            id="name",
        ),
        pytest.param(
            {"name": "thread", "workers": 0}, "workers must be a positive int or None. Received: 0", id="workers"
        ),
        pytest.param(
            {"name": "thread", "timeout": -1},
            "timeout must be a positive number of seconds or None. Received: -1",
            id="timeout",
        ),
        pytest.param(
            {"name": "thread", "ray_address": "ray://h:1"},
            "ray_address is for executor='ray', but the executor is 'thread'",
            id="ray_address-without-ray",
        ),
        pytest.param(
            {"ray_address": "ray://h:1"},
            "ray_address is for executor='ray', but the executor is 'auto'",
            id="ray_address-with-auto",
        ),
        pytest.param(
            {"name": "ray", "ray_address": ""}, "ray_address must be a non-empty string or None", id="ray_address-empty"
        ),
        pytest.param(
            {"name": "process", "max_elements_per_worker": 0},
            "max_elements_per_worker must be a positive int or None. Received: 0",
            id="max_elements_per_worker-zero",
        ),
        pytest.param(
            {"name": "process", "max_elements_per_worker": True},
            "max_elements_per_worker must be a positive int or None. Received: True",
            id="max_elements_per_worker-bool",
        ),
        pytest.param(
            {"name": "thread", "max_elements_per_worker": 100},
            "max_elements_per_worker is for "
            "executor='process' (it replaces worker processes), but the executor is 'thread'.\nHint: pass "
            "executor='process' with it, or leave it out.",
            id="max_elements_per_worker-with-thread",
        ),
        pytest.param(
            {"max_worker_rss": 2**30},
            "max_worker_rss is for executor='process' (it replaces worker "
            "processes), but the executor is 'auto' (which may choose threads, which share this process's "
            "memory).",
            id="max_worker_rss-with-auto",
        ),
        pytest.param(
            {"name": "process", "max_worker_rss": 2},
            "max_worker_rss must be an int number of bytes of "
            "at least 16,777,216 (16 MiB: less than any Python interpreter), or None. Received: 2\nHint: "
            "it counts bytes, e.g. max_worker_rss=2 * 2**30 for 2 GiB.",
            id="max_worker_rss-too-small",
        ),
        pytest.param(
            {"name": "process", "max_worker_rss": 2e9},
            "max_worker_rss must be an int number of bytes",
            id="max_worker_rss-float",
        ),
    ],
)
def test_bad_options_are_refused_with_what_was_received(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(tb.TfBridgeError) as info:
        tb.ExecutorOptions(**kwargs)
    assert message in str(info.value)


def test_a_shorthand_that_contradicts_the_options_is_refused() -> None:
    options = tb.ExecutorOptions("thread", workers=2)
    with pytest.raises(tb.TfBridgeError, match=r"workers=3 contradicts the executor options' workers=2\.\nHint"):
        tb.to_dataset(Listed([np.zeros((2, 2))] * 4), executor=options, workers=3)
    # a shorthand that agrees or adds is fine
    ds = tb.to_dataset(Listed([np.zeros((2, 2))] * 4), executor=options, workers=2, timeout=30)
    assert sum(1 for _ in ds) == 4


def test_executor_must_be_a_name_or_options() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"or a tb.ExecutorOptions\. Received: 3"):
        tb.to_dataset(Listed([np.zeros((2, 2))]), executor=3)  # type: ignore[arg-type]


def test_every_entry_point_takes_the_same_options() -> None:
    items = [np.full((2, 3), float(i)) for i in range(6)]
    options = tb.ExecutorOptions("thread", workers=2, timeout=60)
    ds = tb.to_dataset(Listed(items), executor=options)
    assert [float(b[0, 0]) for b in ds.as_numpy_iterator()] == [0, 1, 2, 3, 4, 5]
    assert tb.validate(Listed(items), executor=options) == 6
    report = tb.inspect(Listed(items), executor=options, full=True)
    assert report.executor["name"] == "thread" and report.scanned["elements"] == 6
    norm = tb.adapt_normalization(Listed(items), executor=options)
    assert np.allclose(np.asarray(norm.mean).ravel(), 2.5)
    examples = [np.ones(n, np.int32) for n in (3, 5, 2, 4)]
    batches = list(tb.pad_batch(lambda: iter(examples), 2, executor="serial").as_numpy_iterator())
    assert [b.shape for b in batches] == [(2, 5), (2, 4)]


def test_each_dataset_builds_its_executor_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = executors.make

    def counting(*args: Any, **kwargs: Any) -> Any:
        executor = real(*args, **kwargs)
        made.append(executor.name)
        return executor

    monkeypatch.setattr(executors, "make", counting)
    ds = tb.to_dataset(Listed([np.zeros((2, 2))] * 5), executor="thread", workers=2)
    for _ in range(3):
        assert sum(1 for _ in ds) == 5
    assert made == ["thread"]


def test_auto_never_chooses_ray() -> None:
    cheap = executors.choose(executors.Cost(0.0001, 0.0001, 8))
    waiting = executors.choose(executors.Cost(0.8, 0.001, 8))
    busy = executors.choose(executors.Cost(0.8, 0.8, 8))
    stream = executors.choose(executors.Cost(0.8, 0.8, 8, sequential=True))
    assert "ray" not in {cheap.name, waiting.name, busy.name, stream.name}
    with pytest.raises(tb.TfBridgeError, match=r"no executor is made for 'auto'"):
        executors.make(executors.Choice("auto", 0, ""), tb.ExecutorOptions())


def test_label_splits_columns_wherever_a_source_is_taken() -> None:
    df = _frame()
    spec = tb.infer_spec(df, label="y")
    assert set(spec.features) == {"a", "b"} and spec.labels.dtype == "int64"
    inputs = tb.keras_inputs(df, label="y")
    assert set(inputs) == {"a", "b"}  # the label is not a model input
    assert tb.validate(df, label="y") == 12
    report = tb.inspect(df, label=["y", "b"])
    assert [f.path for f in report.fields] == ["x['a']", "y['b']", "y['y']"]
    norm = tb.adapt_normalization(df, label="y", path="a", axis=None)
    assert np.isclose(float(np.asarray(norm.mean).ravel()[0]), df["a"].mean())
    features, labels = next(iter(tb.to_dataset(df, label="y", batch_size=4)))
    assert set(features) == {"a", "b"} and labels.shape == (4,)


def test_label_on_records_of_a_generator_and_a_bad_label() -> None:
    def records() -> Any:
        for i in range(4):
            yield {"tokens": np.ones(3, np.int32) * i, "y": i}

    spec = tb.infer_spec(records, batched=False, label="y")
    assert spec.labels.dtype == "int64" and set(spec.features) == {"tokens"}
    padded = tb.pad_batch(records, 2, label="y")
    assert [y.tolist() for _, y in padded.as_numpy_iterator()] == [[0, 1], [2, 3]]
    with pytest.raises(tb.TfBridgeError, match=r"label must be a column name or a non-empty list of column names"):
        tb.infer_spec(records, batched=False, label=[])
    with pytest.raises(tb.TfBridgeError, match=r"label column\(s\) \['z'\] not found"):
        tb.infer_spec(records, batched=False, label="z")
    with pytest.raises(tb.TfBridgeError, match=r"label names the column\(s\) \['y'\] more than once"):
        tb.infer_spec(records, batched=False, label=["y", "y"])


def test_an_executor_a_stream_or_pipeline_cannot_use_is_named_not_ignored() -> None:
    import tensorflow as tf

    def batches() -> Any:
        for i in range(3):
            yield np.full((2, 3), i)

    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"executor='process' is not used for .*batches: a stream can only be "
        r"read in order, by one reader: it is read in the tf.data thread\.\nHint: to produce elements "
        r"in parallel, give an indexed source",
    ):
        ds = tb.to_dataset(batches, batched=True, executor="process")
    assert [int(b[0, 0]) for b in ds.as_numpy_iterator()] == [0, 1, 2]
    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"executor='thread' is not used for tf.data.Dataset \(RangeDataset\): "
        r"a tf.data dataset runs in TensorFlow's own threads",
    ):
        tb.to_dataset(tf.data.Dataset.range(3), executor="thread")
    with pytest.warns(tb.TfBridgeWarning, match=r"in-memory arrays are gathered by tf.data itself"):
        tb.to_dataset(np.zeros((4, 2)), executor=tb.ExecutorOptions("process", workers=2))


def test_workers_and_timeout_a_route_does_not_use_are_named_not_ignored() -> None:
    import tensorflow as tf

    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"timeout=1\.0 is not used for builtins\.tuple: in-memory arrays are gathered by tf\.data itself; "
        r"no Python per element\.\nHint: leave it out: executor options are for Python sources",
    ):
        ds = tb.to_dataset((np.zeros((4, 2)), np.arange(4)), timeout=1.0, batch_size=2)
    assert [b[1].tolist() for b in ds.as_numpy_iterator()] == [[0, 1], [2, 3]]
    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"workers=2 and timeout=1\.0 are not used for tf\.data\.Dataset \(RangeDataset\): .*\n"
        r"Hint: leave them out",
    ):
        tb.to_dataset(tf.data.Dataset.range(3), workers=2, timeout=1.0)

    def examples() -> Any:
        for i in range(3):
            yield np.float32(i)

    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"workers=3 is not used for .*examples: a stream can only be read in order, by one reader\.\n"
        r"Hint: leave it out: workers= is for indexed sources, made in parallel",
    ):
        ds = tb.to_dataset(examples, workers=3)
    assert list(ds.as_numpy_iterator()) == [0.0, 1.0, 2.0]


def test_workers_given_to_the_serial_executor_are_named_not_ignored() -> None:
    with pytest.warns(
        tb.TfBridgeWarning,
        match=r"workers=4 is not used for .*Listed: the serial executor makes one element at a time, in "
        r"tf\.data's thread\.\nHint: leave it out: workers= is for executor='thread' or 'process'",
    ):
        ds = tb.to_dataset(Listed([np.full((2, 3), i, np.float32) for i in range(3)]), executor="serial", workers=4)
    assert [int(b[0, 0]) for b in ds.as_numpy_iterator()] == [0, 1, 2]


def test_a_timeout_on_a_stream_is_used_and_not_warned_about() -> None:
    def examples() -> Any:
        for i in range(3):
            yield np.float32(i)

    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)
        ds = tb.to_dataset(examples, timeout=5.0)
    assert list(ds.as_numpy_iterator()) == [0.0, 1.0, 2.0]

"""Fault injection, for every executor: user errors, killed and hung workers, early stops, lying lengths,
``model.fit`` with ``steps_per_epoch``. After every test the ``nothing_left_behind`` fixture (conftest.py) checks
(not assumes) that no child process, shared-memory slot (memfd descriptor or mapping, /dev/shm entry) or
tfbridge thread outlives it."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _fault_sources import (
    Batches,
    BlocksOnceAt,
    FailsOnceAt,
    HangsOnceAt,
    LyingLength,
    Shrinking,
    Slowish,
    element,
)
from _leaks import alive, children, wait_exit

import tfbridge as tb

EXECUTORS = ["serial", "thread", "process"]
SIZES = ["small", "big"]  # small elements are chunked on their way into tf.data; big ones go one by one


def _first(x: Any) -> int:
    return int(x.numpy().flat[0])


def _consume(ds: Any) -> tuple[list[int], tf.errors.OpError | None]:
    """The element ids of one pass, and the error that ended it early (None: it ran to the end)."""
    got: list[int] = []
    try:
        for x in ds:
            got.append(_first(x))
    except tf.errors.OpError as exc:
        return got, exc
    return got, None


# ---- user code raising -------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_user_error_at_23_delivers_0_to_22_once_then_names_23_and_the_next_epoch_is_whole(
    executor: str, size: str, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    ds = tb.to_dataset(FailsOnceAt(40, 23, fixed, size == "big"), executor=executor, workers=2, peek=1)
    got, err = _consume(ds)
    assert got == list(range(23)), "every element before the failing one, each once, in order"
    assert err is not None
    assert "SourceError: element 23: ValueError: corrupt record 23" in str(err)
    assert "__getitem__" in str(err), "the source's own traceback comes along"
    fixed.touch()
    assert _consume(ds) == (list(range(40)), None)


# ---- a worker process killed -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", SIZES)
def test_worker_sigkilled_mid_epoch_names_its_element_after_every_earlier_one_and_the_next_epoch_is_whole(
    size: str, tmp_path: Path
) -> None:
    tell, fixed = tmp_path / "pid", tmp_path / "fixed"
    os.mkfifo(tell)
    ds = tb.to_dataset(BlocksOnceAt(40, 23, tell, fixed, size == "big"), executor="process", workers=2, peek=1)
    killed: list[int] = []

    def kill_the_worker_at_23() -> None:
        with open(tell) as fifo:  # opens once the worker holding element 23 writes its pid
            pid = int(fifo.read())
        fixed.touch()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_worker_at_23, daemon=True, name="test-killer")
    killer.start()
    got, err = _consume(ds)
    killer.join()
    assert got == list(range(23)), "elements other workers made before 23 are delivered, each once"
    assert err is not None
    assert "WorkerDiedError: worker process" in str(err)
    assert f"(pid {killed[0]}) was killed by SIGKILL while producing element 23" in str(err)
    assert not alive(killed[0])
    assert _consume(ds) == (list(range(40)), None), "a fresh pool serves the next epoch"


@pytest.mark.timeout(90)
def test_workers_sigkilled_between_epochs_fail_one_pass_with_worker_died_then_the_next_is_whole() -> None:
    before = children()
    ds = tb.to_dataset(FailsOnceAt(12, -1, Path("/nonexistent")), executor="process", workers=2, peek=1)
    assert _consume(ds) == (list(range(12)), None)
    workers = children() - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid, 30)
    got, err = _consume(ds)
    assert got == [] and err is not None
    assert "WorkerDiedError: worker process" in str(err) and "was killed by SIGKILL between passes" in str(err)
    assert "element None" not in str(err)
    assert _consume(ds) == (list(range(12)), None)


# ---- a hung element -----------------------------------------------------------------------------------------

_WHERE = {
    "serial": "the source's call for it had not returned",
    "thread": "a worker thread was still inside the source's call for it",
    "process": r"worker process \d \(pid (\d+)\) was still producing it and has been stopped",
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_hung_element_with_timeout_is_element_timeout_error_naming_it_and_the_next_epoch_is_whole(
    executor: str, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    release = None if executor == "process" else threading.Event()
    ds = tb.to_dataset(HangsOnceAt(30, 17, fixed, release), executor=executor, workers=2, peek=1, timeout=2)
    try:
        started = time.monotonic()
        got, err = _consume(ds)
        waited = time.monotonic() - started
        assert got == list(range(17))
        assert err is not None
        pattern = rf"ElementTimeoutError: element 17 was not ready within timeout=2 s: {_WHERE[executor]}\."
        found = re.search(pattern, str(err))
        assert found, str(err)[:1000]
        assert "Hint: look for a hang in the source at that element" in str(err)
        assert waited < 30, "the timeout ends the wait, not the hang"
        if executor == "process":
            assert not alive(int(found.group(1))), "the hung worker was stopped"
        fixed.touch()
        assert _consume(ds) == (list(range(30)), None)
    finally:
        if release is not None:
            release.set()  # the hung call returns; the fixture sees its thread end


@pytest.mark.timeout(60)
def test_hung_stream_with_timeout_is_element_timeout_error_naming_it() -> None:
    release = threading.Event()

    def rows() -> Iterator[np.ndarray]:
        for i in range(20):
            if i == 9 and not release.is_set():
                release.wait()
            yield element(i, False)

    ds = tb.to_dataset(rows, peek=1, timeout=2)
    try:
        got, err = _consume(ds)
        assert got == list(range(9)) and err is not None
        assert (
            "ElementTimeoutError: element 9 was not ready within timeout=2 s: the source's iterator had not "
            "produced it." in str(err)
        )
    finally:
        release.set()
    assert _consume(ds) == (list(range(20)), None)


# ---- early stops ------------------------------------------------------------------------------------------


class _TrainingDiverged(RuntimeError):
    pass


def _train(ds: Any, seen: list[int], fail_after: int) -> None:
    for step, x in enumerate(ds):
        seen.append(_first(x))
        if step + 1 == fail_after:
            raise _TrainingDiverged(f"loss is NaN at step {step}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["break", "take", "exception"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_early_stop_then_the_next_epoch_is_whole_and_nothing_is_left(executor: str, how: str) -> None:
    source = Slowish(60)
    ds = tb.to_dataset(source, executor=executor, workers=2, peek=1)
    seen: list[int] = []
    if how == "break":
        for x in ds:
            seen.append(_first(x))
            if len(seen) == 5:
                break
    elif how == "take":
        seen = [_first(x) for x in ds.take(5)]
    else:
        with pytest.raises(_TrainingDiverged, match="loss is NaN at step 4"):
            _train(ds, seen, fail_after=5)
    assert seen == [0, 1, 2, 3, 4]
    ends = source.ends
    assert _consume(ds) == (list(range(60)), None)
    assert source.ends == ends + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_early_stop_with_a_live_iterator_kept_then_dropped_leaves_nothing(executor: str) -> None:
    ds = tb.to_dataset(Slowish(60), executor=executor, workers=2, peek=1)
    it = iter(ds)
    assert [_first(next(it)) for _ in range(3)] == [0, 1, 2]
    del it  # a pass abandoned mid-way: its workers and threads stop; the fixture checks
    assert _consume(ds) == (list(range(60)), None)


# ---- a source whose __len__ lies -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_longer_than_the_data_gives_every_real_element_then_source_error_at_the_first_missing_one(
    executor: str,
) -> None:
    ds = tb.to_dataset(LyingLength(real=30, says=34), executor=executor, workers=2, peek=1)
    got, err = _consume(ds)
    assert got == list(range(30))
    assert err is not None
    assert "SourceError: element 30: IndexError: index 30 out of range" in str(err)


def test_len_longer_than_the_data_is_caught_by_the_peek_before_any_pipeline_exists() -> None:
    with pytest.raises(tb.SourceError, match=r"element 33: IndexError: index 33 out of range") as info:
        tb.to_dataset(LyingLength(real=30, says=34))
    assert info.value.index == 33


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_shorter_than_the_data_gives_exactly_len_elements_each_epoch(executor: str) -> None:
    ds = tb.to_dataset(LyingLength(real=30, says=25), executor=executor, workers=2, peek=1)
    assert int(ds.cardinality()) == 25
    for _ in range(2):
        assert _consume(ds) == (list(range(25)), None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_that_changes_between_epochs_is_a_tfbridge_error_naming_both_lengths(executor: str) -> None:
    ds = tb.to_dataset(Shrinking(), executor=executor, workers=2, peek=1)
    assert _consume(ds) == (list(range(10)), None)
    got, err = _consume(ds)
    assert got == [] and err is not None
    text = str(err)
    assert "TfBridgeError: len() of the source" in text
    assert "was 10 when the dataset was made and is 7 now" in text
    assert "Hint: make a new dataset with tb.to_dataset" in text
    assert "expected to contain" not in text, "not TensorFlow's cardinality error"


# ---- model.fit with steps_per_epoch -------------------------------------------------------------------------


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
    expected = _fit(_in_memory(known_length=True), steps, epochs)
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
    expected = _fit(_in_memory(known_length=False), steps, epochs)
    assert expected[0] == (_SHORTER if steps == 4 else _LONGER), "Keras learns the length when the data runs out"
    assert _fit(tb.to_dataset(batches), steps, epochs) == expected

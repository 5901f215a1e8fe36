"""tb.resume_callback: a 3-epoch model.fit SIGKILLed at several points (mid-epoch, on the first batch after an
epoch's end, on the last batch) and started again with the same command each time trains, across all its runs,
exactly the batches of one uninterrupted run, in order, and ends with the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb

HERE = Path(__file__).resolve().parent
_RUN_TIMEOUT_S = 180


def _fit(tmp: Path, name: str, kill_at: int, executor: str, save_freq: int = 3) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    args = [str(tmp / f"{name}-backup"), str(tmp / f"{name}.txt"), str(kill_at), str(tmp / f"{name}.npy")]
    done = subprocess.run(
        [sys.executable, str(HERE / "_resume_fit.py"), *args, executor, str(save_freq)],
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode


def _trained(path: Path) -> dict[int, list[int]]:
    """Optimizer step -> the example ids trained at it; a step trained again after a restart counts as its
    last training (the restart restored the weights from before it)."""
    out: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        step, *ids = (int(v) for v in line.split())
        out[step] = ids
    return out


@pytest.mark.timeout(8 * _RUN_TIMEOUT_S)
@pytest.mark.parametrize("executor", ["serial", "process", "stream"])
def test_a_fit_killed_at_five_points_and_restarted_each_time_trains_exactly_the_uninterrupted_batches(
    executor: str, tmp_path: Path
) -> None:
    assert _fit(tmp_path, "whole", -1, executor) == 0
    whole = _trained(tmp_path / "whole.txt")
    assert sorted(whole) == list(range(30)), "3 epochs of 10 batches"
    for epoch in range(3):
        ids = [i for step in range(epoch * 10, epoch * 10 + 10) for i in whole[step]]
        assert sorted(ids) == list(range(40)), "each epoch every example once"
        if executor == "stream":
            assert ids == list(range(40)), "a stream in its order"
    for kill_at in (5, 10, 13, 20, 29):  # mid-epoch; first batch after an epoch's end; ...; the last batch
        assert _fit(tmp_path, "killed", kill_at, executor) == -9, f"the run reached step {kill_at} and was killed"
    assert _fit(tmp_path, "killed", -1, executor) == 0
    assert _trained(tmp_path / "killed.txt") == whole
    np.testing.assert_allclose(np.load(tmp_path / "killed.npy"), np.load(tmp_path / "whole.npy"), rtol=1e-6)
    assert not (tmp_path / "killed-backup").exists(), "the backup goes once fit ends"


def test_resume_callback_refuses_what_is_not_a_dataset() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"resume_callback needs the tf.data.Dataset given to model.fit"):
        tb.resume_callback([1, 2, 3], "/tmp/unused")


def test_resume_callback_refuses_a_save_freq_that_is_not_a_positive_int() -> None:
    import tensorflow as tf

    ds = tf.data.Dataset.range(4)
    with pytest.raises(tb.TfBridgeError, match=r"save_freq must be .*\nHint: pass save_freq='epoch'"):
        tb.resume_callback(ds, "/tmp/unused", save_freq=0)


def _model(keras: Any, built: bool) -> Any:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]) if built else keras.Sequential(
        [keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse")
    return model


@pytest.mark.timeout(120)
def test_resume_callback_refuses_a_model_not_built_before_fit(tmp_path: Path) -> None:
    import keras

    ds = tb.to_dataset(np.zeros((8, 3), np.float32), batch_size=4)
    ds = tf.data.Dataset.zip((ds, ds.map(lambda x: x[:, 0])))
    with pytest.raises(tb.TfBridgeError, match=r"needs a model built before fit.*\nHint: call the model on a batch"):
        _model(keras, False).fit(ds, epochs=1, verbose=0, callbacks=[tb.resume_callback(ds, tmp_path / "b")])


@pytest.mark.timeout(120)
def test_resume_callback_refuses_steps_per_epoch_that_is_not_one_pass(tmp_path: Path) -> None:
    import keras

    x = tb.to_dataset(np.zeros((16, 3), np.float32), batch_size=4)
    ds = tf.data.Dataset.zip((x, x.map(lambda v: v[:, 0])))
    with pytest.raises(tb.TfBridgeError, match=r"runs 2 steps per epoch over a dataset of 4 batches"):
        _model(keras, True).fit(
            ds, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[tb.resume_callback(ds, tmp_path / "b")]
        )


@pytest.mark.timeout(120)
def test_a_second_fit_after_one_that_raised_trains_with_the_same_callback(tmp_path: Path) -> None:
    import keras

    x = tb.to_dataset(np.ones((16, 3), np.float32), batch_size=4)
    ds = tf.data.Dataset.zip((x, x.map(lambda v: v[:, 0])))
    model = _model(keras, True)
    resume = tb.resume_callback(ds, tmp_path / "b", save_freq=1)

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(ds, epochs=2, verbose=0, callbacks=[resume, Stop()])
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[resume])  # resumed: epoch 0 from its third batch
    assert len(history.history["loss"]) == 2
    assert not (tmp_path / "b").exists()


class _Rows:
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> Any:
        return np.full((4, 3), i, np.float32), np.full((4,), float(i), np.float32)


@pytest.mark.timeout(300)
def test_a_resumed_fit_with_adam_counts_the_same_optimizer_steps_and_ends_with_the_same_weights(
    tmp_path: Path,
) -> None:
    """The resumed epoch ends with its last batch: a step that found no data would still count in
    optimizer.iterations, so Adam's bias correction (and any learning-rate schedule) would drift by one."""
    import keras

    def model() -> Any:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        made = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        made.compile("adam", "mse")
        made(np.zeros((1, 3), np.float32))
        return made

    reference = model()
    reference.fit(tb.to_dataset(_Rows(), shuffle=True, seed=5), epochs=3, verbose=0)

    class Preempted(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.epoch == 1 and batch == 4:
                raise RuntimeError("preempted")

    ds = tb.to_dataset(_Rows(), shuffle=True, seed=5)
    resumed = model()
    callback = tb.resume_callback(ds, str(tmp_path / "run"), save_freq=1)
    with pytest.raises(RuntimeError, match="preempted"):
        resumed.fit(ds, epochs=3, verbose=0, callbacks=[callback, Preempted()])
    resumed.fit(ds, epochs=3, verbose=0, callbacks=[callback])

    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 30
    for got, want in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

"""Keras on its other backends (torch here; JAX with `make test-backends`): dense data trains, ragged and string
inputs are refused by tfbridge with a hint instead of failing deep inside Keras. Each backend runs in its own
interpreter (Keras picks its backend once per process)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import keras
    import tensorflow as tf
    import tfbridge as tb

    assert keras.backend.backend() == BACKEND, keras.backend.backend()
    x = np.random.default_rng(0).random((64, 8))
    y = (x.sum(axis=1) > 4).astype("int32")
    inputs = tb.keras_inputs((x, y))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile("adam", "binary_crossentropy")
    history = model.fit(tb.to_dataset((x, y), batch_size=16), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    print("DENSE OK")

    def sentences():
        for n in (3, 5, 2, 4):
            yield [[1] * n, [2]], 1
    try:
        tb.keras_inputs(sentences)
    except tb.TfBridgeError as exc:
        print("RAGGED:", str(exc))
    def text():
        for w in ("a", "bb", "ccc"):
            yield w, 1
    try:
        tb.keras_inputs(text)
    except tb.TfBridgeError as exc:
        print("STRING:", str(exc))
    def tokens():
        for n in (3, 5, 2, 4):
            yield np.ones(n, np.int32), 1
    padded = tb.pad_batch(tokens, 2)
    inputs = tb.keras_inputs(padded)
    print("PADDED", inputs.shape)
    """
)


def _run(backend: str) -> str:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", f"BACKEND = {backend!r}\n" + _SCRIPT],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "backend",
    [
        "torch",
        pytest.param(
            "jax",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("jax") is None, reason="jax is not installed (make test-backends installs it)"
            ),
        ),
    ],
)
def test_other_keras_backends_train_dense_data_and_refuse_ragged_and_strings_with_a_hint(backend: str) -> None:
    out = _run(backend)
    assert "DENSE OK" in out
    ragged = (
        f"RAGGED: the feature x is ragged (int64(2, None) ragged), and Keras on the {backend} backend has no ragged "
        "inputs.\nHint: pad it to dense batches with tb.pad_batch"
    )
    assert ragged in out
    assert f"STRING: the feature x holds strings, which Keras on the {backend} backend cannot take as input." in out
    assert "PADDED (None, None)" in out

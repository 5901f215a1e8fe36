"""keras_inputs and the float policy: the inputs a model is built on have the dtypes, shapes and names of what
to_dataset delivers (float64 cast to Keras's floatx unless ``cast_floats=None``), from a source or a signature
nest, and a model built on them trains on the dataset."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from _sources import Counting

import tfbridge as tb


def test_cast_floats_none_keeps_float64_and_default_casts_to_floatx() -> None:
    source = Counting()
    assert tb.to_dataset(source).element_spec[0].dtype == tf.float32
    assert tb.keras_inputs(source).dtype == "float32"
    assert tb.to_dataset(source, cast_floats=None).element_spec[0].dtype == tf.float64
    assert tb.keras_inputs(source, cast_floats=None).dtype == "float64"


def test_cast_floats_follows_keras_floatx() -> None:
    old = keras.config.floatx()
    keras.config.set_floatx("float16")
    try:
        assert tb.to_dataset(Counting()).element_spec[0].dtype == tf.float16
        assert tb.keras_inputs(Counting()).dtype == "float16"
    finally:
        keras.config.set_floatx(old)


def test_keras_inputs_accepts_a_signature_nest() -> None:
    sig = {"a": tf.TensorSpec((None, 4), tf.float64), "b": tf.TensorSpec((None, 2), tf.int32)}
    inputs = tb.keras_inputs(sig)
    assert inputs["a"].dtype == keras.config.floatx() and inputs["b"].shape == (None, 2)


def test_dict_features_give_named_inputs_and_train_without_reshaping() -> None:
    class Multi(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> Any:
            n = 5 if i < 5 else 2
            rng = np.random.default_rng(i)
            return {"dense": rng.random((n, 4)), "ids": rng.integers(0, 9, (n, 3))}, rng.random((n, 1))

    source = Multi()
    inputs = tb.keras_inputs(source)
    assert set(inputs) == {"dense", "ids"} and inputs["ids"].dtype == "int64"
    assert inputs["dense"].name == "dense"
    embedded = keras.layers.Flatten()(keras.layers.Embedding(9, 2)(inputs["ids"]))
    merged = keras.layers.Concatenate()([inputs["dense"], embedded])
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(merged))  # "dense" is a feature's name
    model.compile("adam", "mse")
    history = model.fit(tb.to_dataset(source), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])

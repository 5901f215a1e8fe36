"""keras_inputs and the float policy: the inputs a model is built on have the dtypes, shapes and names of what
to_dataset delivers (float64 cast to Keras's floatx unless ``cast_floats=None``), from a source or a signature
nest, and a model built on them trains on the dataset."""

from __future__ import annotations

import collections
from typing import Any

import keras
import numpy as np
import pytest
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


def test_list_and_namedtuple_elements_split_as_keras_fit_splits_them() -> None:
    # Keras reads a list or namedtuple of 1-3 items as (x, y, sample_weight), and tf.data delivers a list as a
    # tuple: the inputs built for such a source must be the model that fits the dataset made from it
    pair = collections.namedtuple("pair", "image label")

    class AsList(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            n = 4 if i < 2 else 3
            return [np.full((n, 5), i, np.float64), np.full((n, 1), i % 2, np.float64)]

    def as_namedtuple() -> Any:
        for i in range(3):
            yield pair(np.full((4, 5), i, np.float64), np.full((4, 1), i % 2, np.float64))

    for source in (AsList(), as_namedtuple):
        spec = tb.infer_spec(source, batched=True)
        assert [path for path, _ in spec.fields()] == ["x", "y"]
        inputs = tb.keras_inputs(source, batched=True)
        assert isinstance(inputs, keras.KerasTensor) and inputs.shape == (None, 5)
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile("adam", "mse")
        history = model.fit(tb.to_dataset(source, batched=True), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1])


def test_a_list_of_more_than_three_fields_stays_all_features() -> None:
    def four() -> Any:
        for _ in range(3):
            yield [np.ones((4, 2), np.float32) for _ in range(4)]

    inputs = tb.keras_inputs(four, batched=True)
    assert isinstance(inputs, list) and len(inputs) == 4
    assert tb.infer_spec(four, batched=True).labels is None


def test_label_splits_a_given_spec_or_signature_as_it_splits_a_source() -> None:
    columns = {"age": np.ones((6, 2)), "visits": np.arange(6), "churned": np.zeros(6, np.int64)}
    spec = tb.infer_spec(columns)
    from_source = tb.keras_inputs(columns, label="churned")
    from_spec = tb.keras_inputs(spec, label="churned")
    from_signature = tb.keras_inputs(spec.signature, label=["churned", "visits"], batched=False)
    assert set(from_source) == set(from_spec) == {"age", "visits"}
    assert from_spec["age"].shape == from_source["age"].shape == (None, 2)
    assert set(from_signature) == {"age"}


def test_label_on_a_spec_that_is_not_dict_shaped_says_the_keras_split_applies() -> None:
    spec = tb.infer_spec((np.ones((6, 2)), np.arange(6)))
    with pytest.raises(tb.TfBridgeError, match=r"label='y' needs elements that are dicts of columns.*\n.*Keras split"):
        tb.keras_inputs(spec, label="y")
    with pytest.raises(tb.TfBridgeError, match=r"label column\(s\) \['nope'\] not found.*\['age'\]"):
        tb.keras_inputs(tb.infer_spec({"age": np.ones(3)}), label="nope")


def test_fields_in_a_tuple_under_one_key_are_named_by_their_positions() -> None:
    rows = np.zeros((10, 2), np.float32)
    inputs = tb.keras_inputs(({"a": (rows[:, 0], rows)}, rows[:, 0]))
    assert [t.name for t in inputs["a"]] == ["a_0", "a_1"]
    assert tb.keras_inputs(({"a": (rows,), "b": rows}, rows[:, 0]))["a"][0].name == "a", "one field: its key"
    with pytest.raises(tb.TfBridgeError, match=r"two feature fields would both be named 'a_0' as Keras inputs: "):
        tb.keras_inputs(({"a": (rows, rows), "a_0": rows}, rows[:, 0]))

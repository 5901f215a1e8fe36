"""adapt_normalization: exact dataset-level statistics into a ready keras Normalization layer."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb


def _data(rows: int = 5000, features: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, features)) * rng.uniform(0.1, 1e3, features) + rng.uniform(-1e4, 1e4, features)


def _close(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64).ravel()
    np.testing.assert_allclose(got, np.asarray(want).ravel(), rtol=1e-6)


def test_statistics_match_numpy_over_the_whole_source_to_1e_6() -> None:
    x = _data()
    ds = tf.data.Dataset.from_tensor_slices(x).batch(64)  # float64 all the way
    layer = tb.adapt_normalization(ds)
    _close(layer.mean, x.mean(0))
    _close(layer.variance, x.var(0))
    out = np.asarray(layer(x.astype(np.float32)))
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-3)


def test_statistics_are_dataset_level_not_per_batch() -> None:
    x = np.concatenate([np.zeros((100, 2)), np.full((100, 2), 10.0)])  # batches with very different means
    layer = tb.adapt_normalization(tf.data.Dataset.from_tensor_slices(x).batch(100))
    _close(layer.mean, [5.0, 5.0])
    _close(layer.variance, [25.0, 25.0])


class Rows(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / 128))

    def __getitem__(self, i: int) -> Any:
        rows = self.x[i * 128 : (i + 1) * 128]
        return {"num": rows, "ids": np.zeros((len(rows), 2))}, np.zeros(len(rows))


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_python_source_dict_feature_by_path_through_executors(executor: str) -> None:
    x = _data(1000, 3)
    layer = tb.adapt_normalization(Rows(x), path="num", executor=executor)
    _close(layer.mean, x.mean(0))
    _close(layer.variance, x.var(0))


def test_unbatched_arrays_and_axis_none() -> None:
    x = _data(300, 4)
    _close(tb.adapt_normalization(x).mean, x.mean(0))
    whole = tb.adapt_normalization(x, axis=None)
    _close(whole.mean, x.mean())
    _close(whole.variance, x.var())


def test_mask_value_skips_padded_timesteps_like_masking() -> None:
    rng = np.random.default_rng(1)
    seqs = np.zeros((20, 9, 3))
    lengths = rng.integers(1, 10, 20)
    for i, n in enumerate(lengths):
        seqs[i, :n] = rng.standard_normal((n, 3)) + 4
    real = np.concatenate([seqs[i, :n] for i, n in enumerate(lengths)])
    layer = tb.adapt_normalization(tf.data.Dataset.from_tensor_slices(seqs).batch(6), mask_value=0.0)
    _close(layer.mean, real.mean(0))
    _close(layer.variance, real.var(0))
    unmasked = tb.adapt_normalization(tf.data.Dataset.from_tensor_slices(seqs).batch(6))
    assert not np.allclose(np.asarray(unmasked.mean).ravel(), real.mean(0))


def test_ragged_feature_statistics_cover_every_timestep() -> None:
    batches = [([[1.0, 2.0], [3.0]],), ([[4.0], [5.0, 6.0, 7.0]],)]
    layer = tb.adapt_normalization(batches, axis=None)
    _close(layer.mean, np.mean([1, 2, 3, 4, 5, 6, 7]))


def test_tuple_features_need_a_path_and_unknown_path_is_named() -> None:
    two = tf.data.Dataset.from_tensor_slices(((np.zeros((4, 2)), np.zeros((4, 2))), np.zeros(4))).batch(2)
    with pytest.raises(tb.TfBridgeError, match="say which one to normalise"):
        tb.adapt_normalization(two)
    with pytest.raises(tb.TfBridgeError, match=r"path='nope' names no feature. The features are: \['ids', 'num'\]"):
        tb.adapt_normalization(Rows(_data(10, 3)), path="nope")


def test_all_masked_source_is_an_error() -> None:
    with pytest.raises(tb.TfBridgeError, match="no values to compute statistics from"):
        tb.adapt_normalization(tf.data.Dataset.from_tensor_slices(np.zeros((4, 3, 2))).batch(2), mask_value=0.0)


def test_mask_value_needs_the_last_axis() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"needs axis=-1\. Received: axis=1"):
        tb.adapt_normalization(_data(10, 3), axis=1, mask_value=0.0)


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        (
            0,
            r"axis=0 is the batch axis for the feature's batched shape \(None, 4, 3\): the axis kept must be one "
            r"of its feature axes \(1 to 2, or -2 to -1\)\.\nHint: pass axis=None for one mean and variance",
        ),
        (-3, r"axis=-3 is the batch axis for the feature's batched shape \(None, 4, 3\)"),
        (3, r"axis=3 is out of range for the feature's batched shape \(None, 4, 3\)"),
        (
            (1, 2),
            r"axis must be an int \(the feature axis kept, as in keras.layers.Normalization\) or None\. "
            r"Received: axis=\(1, 2\)\nHint: several kept axes are not supported",
        ),
    ],
    ids=["batch-axis", "batch-axis-negative", "out-of-range", "tuple"],
)
def test_an_axis_that_is_no_feature_axis_is_a_tfbridge_error(axis: Any, message: str) -> None:
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.adapt_normalization(_data(40, 3).reshape(10, 4, 3), axis=axis)


def test_scalar_examples_with_the_default_axis_are_told_to_use_axis_none() -> None:
    x = _data(40, 1).ravel()
    with pytest.raises(tb.TfBridgeError, match=r"\(it has none: each example is a scalar\)\.\nHint: pass axis=None"):
        tb.adapt_normalization(x)
    _close(tb.adapt_normalization(x, axis=None).mean, np.array([x.mean()]))


def test_unbatched_variable_length_examples_need_no_padding() -> None:
    rng = np.random.default_rng(3)
    rows = [rng.standard_normal((int(rng.integers(2, 9)), 4)) + 2 for _ in range(50)]

    def examples() -> Any:
        for r in rows:
            yield r, 0

    layer = tb.adapt_normalization(examples, batched=False)
    everything = np.concatenate(rows)
    _close(layer.mean, everything.mean(0))
    _close(layer.variance, everything.var(0))


def test_a_dict_left_with_one_feature_after_label_needs_no_path() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, (64, 4)).astype(np.float32)
    layer = tb.adapt_normalization({"a": values, "y": np.arange(64)}, label="y")
    np.testing.assert_allclose(np.asarray(layer.mean).reshape(-1), values.astype(np.float64).mean(axis=0), rtol=1e-5)
    with pytest.raises(tb.TfBridgeError, match=r"the features are a dict with \['a', 'b'\]; say which one"):
        tb.adapt_normalization({"a": values, "b": values, "y": np.arange(64)}, label="y")


def test_a_one_shot_iterator_is_used_up_by_adapt_normalization_and_the_warning_says_so() -> None:
    gen = (np.full((4, 3), i, np.float32) for i in range(5))
    with pytest.warns(tb.TfBridgeWarning) as record:
        norm = tb.adapt_normalization(gen, batched=True)
    said = [str(w.message) for w in record if issubclass(w.category, tb.TfBridgeWarning)]
    assert said == [
        "adapt_normalization reads every element of a one-shot iterator: it is used up by this call, and a later "
        "tb.to_dataset of it gives nothing more.\nHint: pass a generator function (the function, not its result) "
        "or a re-iterable, to read the data again for training."
    ]
    np.testing.assert_allclose(np.asarray(norm.mean).reshape(-1), [2.0, 2.0, 2.0])
    assert next(gen, None) is None, "every element was read"

"""Batches or single examples: decided by the kind of source, then by the elements, and never guessed silently."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge.sources import convention


def _no_warning(fn: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)
        return fn()


def test_a_generator_of_examples_with_a_scalar_label_is_read_as_examples() -> None:
    def examples() -> Iterator[Any]:
        for i in range(6):
            yield np.zeros((10, 10, 3), np.float32), i

    spec = _no_warning(lambda: tb.infer_spec(examples))
    assert not spec.batched
    inputs = tb.keras_inputs(examples)
    assert inputs.shape == (None, 10, 10, 3)


def test_fields_led_by_different_sizes_are_examples() -> None:
    def examples() -> Iterator[Any]:
        for _ in range(4):
            yield np.zeros((32, 32, 3)), np.zeros(10)

    assert not _no_warning(lambda: tb.infer_spec(examples)).batched


def test_a_short_last_batch_shows_batches_without_a_warning() -> None:
    class Batches:
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> Any:
            n = 8 if i < 4 else 3
            return np.zeros((n, 16)), np.zeros((n, 16))

    spec = _no_warning(lambda: tb.infer_spec(Batches()))
    assert spec.batched and tb.keras_inputs(Batches()).shape == (None, 16)


def test_when_the_data_cannot_tell_a_warning_says_batches_were_assumed_and_how_to_say_otherwise() -> None:
    def pairs() -> Iterator[Any]:
        for i in range(5):
            yield np.zeros((10, 10, 3)), np.eye(10)[i]

    with pytest.warns(tb.TfBridgeWarning, match=r"pairs: every peeked element has a leading axis of 10, so an "
                      r"element could be a batch or a single example; it is taken as a batch") as got:
        spec = tb.infer_spec(pairs)
    assert spec.batched
    assert "Hint: pass batched=False if each element is one example" in str(got[0].message)
    assert got[0].filename == __file__  # the warning points at the user's line
    assert not _no_warning(lambda: tb.infer_spec(pairs, batched=False)).batched
    assert tb.keras_inputs(pairs, batched=False).shape == (None, 10, 10, 3)


def test_keras_pydataset_subclasses_are_batches_by_convention() -> None:
    class Tiny(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> Any:
            return np.zeros((4, 3)), np.zeros(4)

    assert convention(Tiny()) is True
    assert _no_warning(lambda: tb.infer_spec(Tiny())).batched


def test_plain_objects_have_no_convention() -> None:
    assert convention([np.zeros((2, 2))]) is None
    assert convention(object()) is None


@pytest.mark.parametrize(
    ("make", "batched"),
    [
        pytest.param(lambda d: d.batch(4).cache().shuffle(3).prefetch(1), True, id="batch-cache-shuffle-prefetch"),
        pytest.param(lambda d: d.batch(4).take(2).repeat(2).with_options(tf.data.Options()), True, id="take-options"),
        pytest.param(lambda d: d.map(lambda x: (x, x)).cache(), False, id="map-cache"),
        pytest.param(lambda d: d.batch(4).unbatch().prefetch(2), False, id="unbatch"),
        pytest.param(lambda d: d.batch(3).rebatch(2), True, id="rebatch"),
    ],
)
def test_tf_data_pipelines_are_read_through_element_preserving_steps(make: Any, batched: bool) -> None:
    ds = make(tf.data.Dataset.range(12).map(lambda x: tf.fill([2], x)))
    assert _no_warning(lambda: tb.infer_spec(ds)).batched is batched


def test_the_tensorflow_image_tutorial_pipeline_gets_one_batch_axis() -> None:
    images = np.zeros((20, 8, 8, 3), np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(20))).batch(4).cache().shuffle(100).prefetch(2)
    inputs = tb.keras_inputs(ds)
    assert inputs.shape == (None, 8, 8, 3)


def test_from_generator_and_interleave_are_decided_by_their_elements() -> None:
    examples = tf.data.Dataset.from_generator(
        lambda: ((np.zeros(3), i) for i in range(4)),
        output_signature=(tf.TensorSpec((3,), tf.float64), tf.TensorSpec((), tf.int64)),
    )
    assert not _no_warning(lambda: tb.infer_spec(examples)).batched  # a scalar field: examples
    batched = tf.data.Dataset.range(10).batch(4)
    pairs = tf.data.Dataset.range(2).interleave(lambda _: tf.data.Dataset.zip((batched, batched)))
    assert _no_warning(lambda: tb.infer_spec(pairs)).batched  # two fields led by 4, 4, 2: batches
    same = tf.data.Dataset.from_generator(
        lambda: (np.zeros((4, 2)) for _ in range(3)), output_signature=tf.TensorSpec((4, 2), tf.float64)
    )
    with pytest.warns(tb.TfBridgeWarning, match=r"taken as a single example \(its steps do not say; a tf\.data "
                      r"pipeline's elements are examples unless it batches\)"):
        assert not tb.infer_spec(same).batched


def test_variable_length_sequences_from_a_generator_pipeline_are_examples_with_a_warning() -> None:
    def sequences() -> Iterator[Any]:
        for i in range(5):
            yield np.arange(i + 1, dtype=np.int32)

    ds = tf.data.Dataset.from_generator(sequences, output_signature=tf.TensorSpec([None], tf.int32))
    with pytest.warns(tb.TfBridgeWarning, match=r"every peeked element has one field whose leading size varies"):
        spec = tb.infer_spec(ds)
    assert not spec.batched and tb.keras_inputs(ds).shape == (None, None)
    padded = tb.pad_batch(ds, 2)
    assert [b.shape for b in padded.as_numpy_iterator()] == [(2, 2), (2, 4), (1, 5)]


def test_datasets_of_datasets_are_refused_with_a_way_out() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"the elements of this dataset are datasets themselves.*\nHint: turn "
                       r"each window into a tensor first, e\.g\. ds\.window\(n\)\.flat_map"):
        tb.infer_spec(tf.data.Dataset.range(8).window(2))


def test_mixes_of_batched_datasets_are_batched_and_mixes_of_examples_are_not() -> None:
    rows = tf.data.Dataset.from_tensor_slices(np.random.rand(40, 4).astype("float32"))
    batches = rows.batch(8)
    order = tf.data.Dataset.range(2).repeat(3)
    for mixed in (
        tf.data.Dataset.sample_from_datasets([batches, batches.map(lambda x: x * 2)], seed=1),
        tf.data.Dataset.choose_from_datasets([batches, batches], order),
    ):
        assert _no_warning(lambda mixed=mixed: tb.infer_spec(mixed)).batched
        assert tb.keras_inputs(mixed).shape == (None, 4)
    examples = tf.data.Dataset.sample_from_datasets([rows, rows], seed=1)
    assert not _no_warning(lambda: tb.infer_spec(examples)).batched
    assert tb.keras_inputs(examples).shape == (None, 4)


def test_examples_whose_fields_share_a_varying_length_are_not_taken_as_batches_silently() -> None:
    """Tokens and their per-token tags: fields that share one length per element, a length that varies as no short
    last batch does. The data cannot tell; the Keras convention decides, with the warning and its way out."""
    lengths = [3, 7, 2, 9, 4, 4, 8, 1, 6, 5]

    def tagged() -> Iterator[Any]:
        for n in lengths:
            yield np.arange(n, dtype=np.int32), np.zeros(n, np.int32)

    with pytest.warns(tb.TfBridgeWarning, match=r"fields that share one leading size within each element, a size that "
                      r"varies between elements \(3, 7, 2, 9, 4, 4, 8, 1: .*\n.*batched=False"):  # fmt: skip
        assert tb.infer_spec(tagged).batched
    examples = _no_warning(lambda: tb.infer_spec(tagged, batched=False))
    assert not examples.batched and tb.keras_inputs(tagged, batched=False).shape == (None, None)  # x: tokens

    def batches() -> Iterator[Any]:  # 32, 32, 32, then a short last batch of 4: batches, nothing to say
        for n in (32, 32, 32, 4):
            yield np.zeros((n, 3), np.float32), np.zeros(n, np.int32)

    assert _no_warning(lambda: tb.infer_spec(batches)).batched


def test_two_elements_whose_fields_share_different_lengths_cannot_tell_and_say_so() -> None:
    def pair() -> Iterator[Any]:
        for n in (7, 3):
            yield np.arange(n), np.zeros(n)

    with pytest.warns(tb.TfBridgeWarning, match=r"\(7, 3: the lengths of variable-length examples"):
        assert tb.infer_spec(pair).batched

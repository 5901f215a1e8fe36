"""Every TensorFlow internal tfbridge relies on (src/tfbridge/_tf.py), exercised on the installed TensorFlow, and
the message a user gets when a TensorFlow release no longer provides one."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge import _tf
from tfbridge.sources import ends_in_batching


def test_pipeline_inputs_are_read_through_every_kind_of_step() -> None:
    base = tf.data.Dataset.range(10)
    batched = base.batch(2)
    assert _tf.dataset_inputs(batched) == [base]
    cached = batched.cache()  # TensorFlow 2.21 names this class CacheDataset, without the underscore
    assert _tf.dataset_kind(cached) in _tf.PASS_THROUGH_DATASETS
    assert _tf.dataset_inputs(cached) == [batched]
    zipped = tf.data.Dataset.zip((batched, batched))
    assert len(_tf.dataset_inputs(zipped)) == 2
    joined = batched.concatenate(batched)
    assert _tf.dataset_inputs(joined) == [batched, batched]
    mixed = tf.data.Dataset.sample_from_datasets([batched, joined], seed=1)  # the selector is not an input
    assert _tf.dataset_inputs(mixed) == [batched, joined]
    assert _tf.dataset_inputs(base) == []


@pytest.mark.parametrize(
    ("make", "batched"),
    [
        pytest.param(lambda d: d.batch(4).cache().shuffle(3).prefetch(1), True, id="batch-cache-shuffle-prefetch"),
        pytest.param(lambda d: d.padded_batch(4).repeat(2), True, id="padded_batch-repeat"),
        pytest.param(lambda d: d.map(lambda x: x * 2).cache(), False, id="map-cache"),
        pytest.param(lambda d: d.batch(4).unbatch(), False, id="batch-unbatch"),
        pytest.param(lambda d: tf.data.Dataset.zip((d.batch(2), d.batch(2))), True, id="zip-of-batched"),
        pytest.param(lambda d: d.batch(2).concatenate(d.batch(3)), True, id="concatenate-of-batched"),
    ],
)
def test_batched_or_not_is_read_from_the_pipeline(make: object, batched: bool) -> None:
    ds = make(tf.data.Dataset.range(10))  # type: ignore[operator]
    assert ends_in_batching(ds) is batched


def test_datasets_tfbridge_built_say_whether_they_are_batched_through_later_steps() -> None:
    x = np.zeros((12, 3), np.float32)
    built = tb.to_dataset(x, batch_size=4)
    assert _tf.tagged_batched(built) is True
    assert ends_in_batching(built.cache().prefetch(1))
    assert tb.infer_spec(built.cache()).batched
    assert tb.keras_inputs(built.cache()).shape == (None, 3)


def test_a_step_whose_inputs_moved_names_the_tensorflow_change() -> None:
    class _BatchDataset:  # what a TensorFlow release that renamed _input_dataset would hand us
        pass

    with pytest.raises(_tf.TensorFlowChanged, match=r"no longer provides _input_dataset on tf.data's _BatchDataset"):
        _tf.dataset_inputs(_BatchDataset())
    with pytest.raises(tb.TfBridgeError, match=rf"tfbridge is tested with TensorFlow {_tf.TESTED_TF_VERSION}"):
        _tf.dataset_inputs(_BatchDataset())


def test_variant_tensor_and_graph_def_serialize_a_pipeline() -> None:
    from tfbridge.service import python_ops

    def gen() -> object:
        yield 1

    assert python_ops(tf.data.Dataset.range(3)) == []
    assert python_ops(tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((), tf.int64)))

    class Plain:
        pass

    with pytest.raises(_tf.TensorFlowChanged, match=r"no longer provides Dataset._variant_tensor"):
        _tf.variant_tensor(Plain())


def test_loosen_shape_lets_a_given_spec_open_a_static_dimension() -> None:
    ds = tf.data.Dataset.from_tensor_slices(np.zeros((8, 3), np.float32)).batch(4, drop_remainder=True)
    assert ds.element_spec.shape == (4, 3)
    out = tb.to_dataset(ds, spec=tf.TensorSpec((None, 3), tf.float32))
    assert out.element_spec.shape.as_list() == [None, 3]
    assert sum(int(b.shape[0]) for b in out) == 8


def test_server_address_of_a_real_worker_and_a_server_without_one() -> None:
    from tfbridge import service

    dispatcher = service.dispatcher(port=0)
    try:
        assert _tf.server_address(dispatcher).startswith("localhost:")
    finally:
        dispatcher.stop()

    class NoAddress:
        pass

    with pytest.raises(_tf.TensorFlowChanged, match=r"the address of a tf.data service server"):
        _tf.server_address(NoAddress())


def test_snapshot_metadata_is_the_record_dataset_save_writes(tmp_path: object) -> None:
    record = _tf.snapshot_metadata()
    assert hasattr(record, "run_id") and hasattr(record, "num_elements")


def test_missing_tensorflow_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    wanted = r'tfbridge needs TensorFlow, which is not installed\.\nHint: pip install "tfbridge\[cpu\]"'
    with pytest.raises(tb.TfBridgeError, match=wanted):
        _tf.tf()


def test_too_old_tensorflow_is_refused_with_the_supported_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf, "__version__", "2.12.1")
    with pytest.raises(tb.TfBridgeError, match=r"tfbridge needs TensorFlow 2\.16 or newer; this is 2\.12\.1"):
        _tf.tf()

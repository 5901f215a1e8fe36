"""input_context=: each tf.distribute input pipeline reads its own disjoint part; together, everything once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb

pytestmark = pytest.mark.timeout(180)


class Batches:
    def __len__(self) -> int:
        return 25

    def __getitem__(self, i: int) -> Any:
        return np.full((2, 3), i, np.float32), np.full((2,), i)


def _gen() -> Any:
    for i in range(17):
        yield np.full((1,), i, np.int64)


SOURCES = {
    "indexed": (lambda: Batches(), 25, {}),
    "arrays": (lambda: (np.arange(31)[:, None] * np.ones((1, 2)), np.arange(31)), 31, {}),
    "generator": (lambda: _gen, 17, {}),
    "tf.data": (lambda: tf.data.Dataset.range(23).map(lambda i: (tf.fill([2], i), i)), 23, {}),
}


def _ids(ds: Any) -> list[int]:
    """The id each element carries in its last field (for a batch: its first row's)."""
    return [int(np.reshape(tf.nest.flatten(element)[-1].numpy(), -1)[0]) for element in ds]


CASES = [(kind, False) for kind in SOURCES] + [("indexed", True), ("arrays", True)]  # streams do not shuffle


@pytest.mark.parametrize(("kind", "shuffle"), CASES)
def test_three_input_pipelines_partition_the_source(kind: str, shuffle: bool) -> None:
    make, n, kwargs = SOURCES[kind]
    parts = []
    for pid in range(3):
        ctx = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=pid, num_replicas_in_sync=3)
        ds = tb.to_dataset(make(), input_context=ctx, shuffle=shuffle, seed=7 if shuffle else None, **kwargs)
        parts.append(_ids(ds))
    assert all(parts), parts
    seen = [i for part in parts for i in part]
    assert sorted(seen) == list(range(n))  # disjoint, and together every element exactly once
    if not shuffle:
        for pid, part in enumerate(parts):
            assert part == list(range(pid, n, 3))


def test_sharded_indexed_dataset_has_the_cardinality_of_its_part() -> None:
    ctx = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=3)
    ds = tb.to_dataset(Batches(), input_context=ctx)
    assert int(ds.cardinality()) == len(range(3, 25, 4)) == 6


def test_shuffle_across_pipelines_without_a_seed_is_refused() -> None:
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0)
    with pytest.raises(tb.TfBridgeError, match="shuffle=True across 2 input pipelines needs seed=") as info:
        tb.to_dataset(Batches(), input_context=ctx, shuffle=True)
    assert "Hint: pass the same seed" in str(info.value)


def test_a_bad_input_context_is_refused() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"input_context must be a tf\.distribute\.InputContext") as info:
        tb.to_dataset(Batches(), input_context=object())
    assert "distribute_datasets_from_function" in str(info.value)


def test_distribute_datasets_from_function_trains_a_model() -> None:
    import keras

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    seen_contexts = []

    def dataset_fn(ctx: tf.distribute.InputContext) -> Any:
        seen_contexts.append(ctx)
        return tb.to_dataset(Batches(), input_context=ctx, executor="serial")

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    with strategy.scope():
        x = tb.keras_inputs(Batches())  # the features' input: float32 [None, 3]
        model = keras.Model(x, keras.layers.Dense(1)(x))
        model.compile("sgd", "mse")
    history = model.fit(dist, epochs=1, steps_per_epoch=25, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert seen_contexts and seen_contexts[0].num_input_pipelines == 1


def test_a_tf_data_pipeline_over_files_is_still_sharded_by_its_files_after_the_float_cast(tmp_path: Any) -> None:
    """tf.distribute shards a pipeline by its files when it can (AutoShardPolicy.FILE): the cast tfbridge adds
    (float64 -> float32) must keep the pipeline's source the files, not make it one tf.data cannot shard."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    paths = []
    for k in range(4):
        path = str(tmp_path / f"part-{k}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(3):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=[10.0 * k + i])),
                })).SerializeToString())  # fmt: skip
        paths.append(path)
    spec = {"x": tf.io.FixedLenFeature([], tf.float32)}
    parse = lambda r: tf.cast(tf.io.parse_single_example(r, spec)["x"], tf.float64)  # noqa: E731
    records = tf.data.TFRecordDataset(paths).map(parse)
    ds = tb.to_dataset(records)
    assert ds.element_spec.dtype == tf.float32
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    first = _AutoShardDataset(ds.with_options(options), 2, 0)
    assert sorted(float(v) for v in first) == [0.0, 1.0, 2.0, 20.0, 21.0, 22.0], "files 0 and 2, whole"

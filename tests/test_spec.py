"""Spec inference and the Spec object: merging samples (dims that vary, ragged, sparse, short last batches),
where the peek looks, the batched flag of tf.data sources, the Keras split, the JSON round trip and the
generated code. Refusals and their messages are in test_errors.py."""

from __future__ import annotations

import collections
import json
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _sources import Listed

import tfbridge as tb
from tfbridge.spec import infer_from_samples


def _spec(*elements: Any, batched: bool = True) -> tb.Spec:
    return infer_from_samples(list(enumerate(elements)), batched)


def _rows() -> tuple[np.ndarray, np.ndarray]:
    """23 rows: x float64 (23, 3), y int64 (23,)."""
    return np.arange(23 * 3, dtype=np.float64).reshape(23, 3), np.arange(23, dtype=np.int64)


def test_dimension_that_differs_between_samples_becomes_none() -> None:
    spec = _spec((np.zeros((8, 10, 3)),), (np.zeros((8, 12, 3)),))
    assert spec.signature[0].shape.as_list() == [None, None, 3]


def test_unbatched_samples_keep_fixed_dims() -> None:
    spec = _spec(np.zeros((10, 3)), np.zeros((10, 3)), batched=False)
    assert spec.signature.shape.as_list() == [10, 3]


def test_lists_of_unequal_length_inside_an_element_become_ragged() -> None:
    spec = _spec({"t": [[1, 2], [3]]}, {"t": [[1], [2], [3, 4, 5]]})
    leaf = spec.signature["t"]
    assert isinstance(leaf, tf.RaggedTensorSpec) and leaf.ragged_rank == 1 and leaf.dtype == tf.int64


def test_dense_and_ragged_samples_of_one_field_merge_to_ragged() -> None:
    spec = _spec(([[1, 2], [3, 4]],), ([[1], [2, 3]],))
    assert isinstance(spec.signature[0], tf.RaggedTensorSpec)


def test_empty_list_field_takes_the_dtype_of_other_samples() -> None:
    spec = _spec([], [1.5, 2.0], batched=False)
    assert spec.signature.dtype == tf.float64 and spec.signature.shape.as_list() == [None]


def test_sparse_values_give_sparse_spec() -> None:
    st = tf.sparse.from_dense(tf.constant([[0.0, 1.0], [2.0, 0.0]]))
    spec = _spec((st,), (st,))
    assert isinstance(spec.signature[0], tf.SparseTensorSpec)
    assert tb.keras_inputs(spec).sparse


def test_keras_split_of_tuples_of_one_two_three_and_others() -> None:
    x, y, w = np.zeros((2, 3)), np.zeros((2,)), np.ones((2,))
    one, two, three = _spec((x,)), _spec((x, y)), _spec((x, y, w))
    assert one.labels is None and one.features.shape.as_list() == [None, 3]
    assert two.labels.shape.as_list() == [None] and two.sample_weights is None
    assert three.sample_weights.shape.as_list() == [None]
    four = _spec((x, y, w, w))
    assert isinstance(four.features, tuple) and len(four.features) == 4 and four.labels is None
    as_dict = _spec({"a": x, "b": y})
    assert set(as_dict.features) == {"a", "b"} and as_dict.labels is None


def test_json_round_trip_is_plain_json_and_equal() -> None:
    spec = _spec(({"tok": [[1, 2], [3]], "img": np.zeros((2, 4, 4, 3), np.float32)}, np.zeros((2,), np.int32)))
    text = spec.to_json()
    data = json.loads(text)
    assert set(data) == {"batched", "signature"} and data["batched"] is True
    again = tb.Spec.from_json(text)
    assert again == spec and again.signature == spec.signature


def test_json_round_trip_keeps_a_namedtuple_and_its_fields() -> None:
    pair = collections.namedtuple("pair", "image meta")
    batch = (pair(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.int32)), np.zeros((2,)))
    spec = _spec(batch)
    again = tb.Spec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    features = again.signature[0]
    assert type(features).__name__ == "pair" and features._fields == ("image", "meta")
    assert features.meta == tf.TensorSpec((None, 3), tf.int32)
    assert type(tb.Spec.from_json(spec.to_json()).signature[0]) is type(features)
    assert again != _spec((tuple(batch[0]), batch[1])), "a plain tuple is another structure"


def test_a_spec_with_integer_dict_keys_compares_and_hashes() -> None:
    spec = _spec({1: np.zeros((2, 3)), 2: np.zeros((2,))})
    same = _spec({2: np.ones((4,)), 1: np.ones((4, 3))})
    assert spec == same and hash(spec) == hash(same) and len({spec, same}) == 1
    with pytest.raises(tb.TfBridgeError, match=r"^Spec\.to_json: dict keys must be strings for JSON\. Received key 1$"):
        spec.to_json()


def test_code_executed_rebuilds_an_equal_signature_and_inputs() -> None:
    spec = _spec(
        ({"tokens": [[1, 2], [3]], "image": np.zeros((2, 8, 8, 3), np.float32)}, np.zeros((2,), np.int64), np.ones(2)),
    )
    namespace: dict[str, Any] = {}
    exec(spec.code(cast_floats=None), namespace)
    assert namespace["output_signature"] == spec.signature
    inputs = namespace["inputs"]
    assert set(inputs) == {"tokens", "image"}
    assert inputs["image"].shape == (None, 8, 8, 3) and inputs["tokens"].ragged
    assert inputs["tokens"].name == "tokens"


def test_code_of_unbatched_spec_keeps_every_dim_in_inputs() -> None:
    spec = _spec(np.zeros((5, 3)), np.zeros((7, 3)), batched=False)
    namespace: dict[str, Any] = {}
    exec(spec.code(cast_floats=None), namespace)
    assert namespace["output_signature"] == tf.TensorSpec((None, 3), tf.float64)
    assert namespace["inputs"].shape == (None, None, 3)


def test_code_follows_the_float_policy_and_names_of_keras_inputs() -> None:
    spec = _spec(({"a": {"b": np.zeros((2, 3))}, "c/d": np.zeros((2, 1), np.int32)}, np.zeros(2)))
    namespace: dict[str, Any] = {}
    exec(spec.code(), namespace)
    generated = namespace["inputs"]
    made = tb.keras_inputs(spec)
    assert namespace["output_signature"][0]["a"]["b"].dtype == tf.float32  # floatx, as to_dataset delivers
    assert generated["a"]["b"].dtype == made["a"]["b"].dtype == "float32"
    assert generated["a"]["b"].name == made["a"]["b"].name == "a_b"
    assert generated["c/d"].name == made["c/d"].name == "c_d"


def test_code_and_keras_inputs_refuse_two_fields_with_one_input_name() -> None:
    spec = _spec(({"a": {"b": np.zeros((2, 3))}, "a_b": np.zeros((2, 3))}, np.zeros(2)))
    for make in (spec.code, lambda: tb.keras_inputs(spec)):
        with pytest.raises(tb.TfBridgeError, match=r"two feature fields would both be named 'a_b' as Keras inputs"):
            make()


def test_from_signature_guesses_batched_from_leading_none() -> None:
    assert tb.Spec.from_signature(tf.TensorSpec((None, 3), tf.float32)).batched
    assert not tb.Spec.from_signature(tf.TensorSpec((3,), tf.float32)).batched


def test_inference_records_which_samples_made_a_dim_vary_beside_an_immutable_spec() -> None:
    from tfbridge.spec import infer

    result = infer([(0, (np.zeros((4, 3)),)), (1, (np.zeros((2, 3)),))], batched=True)
    assert result.shapes["x"] == [(0, (4, 3)), (1, (2, 3))]
    with pytest.raises(AttributeError):
        result.spec.batched = False  # type: ignore[misc]
    assert not hasattr(result.spec, "samples")


# ---- where the peek looks, what varies -----------------------------------------------------------------


def test_short_last_batch_and_varying_length_both_give_none_dims() -> None:
    class Seq(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> Any:
            n = 8 if i < 9 else 3  # short last batch
            length = 5 + i  # sequence length varies between batches
            return np.zeros((n, length, 4), np.float32), np.zeros((n,), np.int32)

    spec = tb.infer_spec(Seq())
    x, y = spec.signature
    assert x.shape.as_list() == [None, None, 4]
    assert y.shape.as_list() == [None]


def test_indexed_sources_are_peeked_at_spread_positions_not_only_the_first() -> None:
    seen: list[int] = []

    class Seq:
        def __len__(self) -> int:
            return 100

        def __getitem__(self, i: int) -> Any:
            seen.append(i)
            return np.zeros((4, 2), np.float32)

    tb.infer_spec(Seq(), peek=5)
    assert seen[0] == 0 and seen[-1] == 99 and len(set(seen)) == 5


# ---- the batched flag of tf.data sources ------------------------------------------------------------------


def test_tf_data_drop_remainder_batch_axis_is_none_and_element_spec_matches() -> None:
    ds = tf.data.Dataset.from_tensor_slices(_rows()).batch(4, drop_remainder=True)
    spec = tb.infer_spec(ds)
    assert spec.signature[0].shape.as_list() == [None, 3]
    out = tb.to_dataset(ds)
    assert out.element_spec == (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    assert sum(int(x.shape[0]) for x, _ in out) == 20


def test_a_dataset_from_to_dataset_keeps_its_batched_flag() -> None:
    x, y = _rows()
    ds = tb.to_dataset(Listed([(x[i : i + 5], y[i : i + 5]) for i in range(0, 23, 5)]))
    assert tb.infer_spec(ds).batched
    assert tb.infer_spec(ds.map(lambda x, y: (x, y))).batched
    rows = tb.to_dataset(_rows())
    assert not tb.infer_spec(rows).batched
    assert tb.infer_spec(tb.to_dataset(_rows(), batch_size=4)).batched


def test_zipped_batched_datasets_are_batched() -> None:
    a = tf.data.Dataset.from_tensor_slices(np.zeros((8, 3))).batch(4)
    assert tb.infer_spec(tf.data.Dataset.zip((a, a))).batched
    assert tb.keras_inputs(tf.data.Dataset.zip((a, a))).shape == (None, 3)


# ---- lists of fields, names in generated code ------------------------------------------------------------


def test_a_list_of_fields_is_a_tuple_in_signature_dataset_and_code() -> None:
    batch = ([np.zeros((2, 3), np.float32), np.ones((2, 4), np.float32)], np.zeros(2, np.int64))
    spec = tb.infer_spec(Listed([batch]))
    assert isinstance(spec.structure[0], list)  # Keras's multi-input list, as the data has it
    ds = tb.to_dataset(Listed([batch]), executor="serial")
    assert ds.element_spec == spec.signature and isinstance(spec.signature[0], tuple)
    ((x1, x2), y), = list(ds)
    assert x1.shape == (2, 3) and x2.shape == (2, 4) and y.shape == (2,)
    namespace: dict[str, Any] = {}
    exec(spec.code(), namespace)
    assert namespace["output_signature"] == spec.signature and isinstance(namespace["inputs"], list)


def test_code_names_inputs_keras_accepts_for_keys_with_a_slash() -> None:
    spec = tb.infer_spec({"image/encoded": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int64)})
    namespace: dict[str, Any] = {}
    exec(spec.code(), namespace)
    assert namespace["inputs"]["image/encoded"].name == "image_encoded"


def test_a_signature_leaf_that_is_no_type_spec_is_named_with_a_hint() -> None:
    message = (
        r"cannot take ndarray as a spec leaf: every leaf of a signature is a tf\.TensorSpec, tf\.RaggedTensorSpec "
        r"or tf\.SparseTensorSpec\. Received: ndarray\(shape=\(3,\), dtype=float64\)\nHint: to read a spec from data, "
        r"use tb\.infer_spec\(data\)\."
    )
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.Spec.from_signature({"a": np.zeros(3)})


def test_a_ragged_spec_of_ragged_rank_0_is_refused_before_anything_runs() -> None:
    import tensorflow as tf

    class Tokens:
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> dict[str, np.ndarray]:
            return {"tok": np.arange(i + 1, dtype=np.int32), "y": np.int32(i)}

    spec = {"tok": tf.RaggedTensorSpec((None,), tf.int32), "y": tf.TensorSpec((), tf.int32)}  # ragged_rank 0
    message = (
        r"the spec's x\['tok'\] is a RaggedTensorSpec of ragged_rank 0 \(TensorFlow's default for rank 1\): no "
        r"dimension of it is ragged, so it stands for a dense tensor\.\nHint: for a field of varying length in "
        r"single examples use tf\.TensorSpec\(\[None\], tf\.int32\)"
    )
    with pytest.raises(tb.TfBridgeError, match=message):
        tb.to_dataset(Tokens(), spec=spec, batched=False)
    spec["tok"] = tf.TensorSpec([None], tf.int32)  # as the hint says
    assert [x["tok"].shape[0] for x in tb.to_dataset(Tokens(), spec=spec, batched=False)] == [1, 2, 3, 4, 5, 6]


def test_a_tf_data_dataset_of_ragged_rows_keeps_its_own_ragged_rank_0_spec() -> None:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1, 2], [3], [4, 5, 6]]))
    assert ds.element_spec.ragged_rank == 0  # TensorFlow's own spec for these rows
    assert tb.infer_spec(ds).signature == ds.element_spec
    for given in (None, ds.element_spec):
        assert [len(x) for x in tb.to_dataset(ds, spec=given)] == [2, 1, 3]


def test_code_keeps_namedtuples_so_its_signature_equals_the_spec() -> None:
    pair = collections.namedtuple("pair", ["image", "meta"])
    other = collections.namedtuple("pair", ["a"])  # another type of the same name
    element = (pair(np.zeros((8, 8, 3), np.float32), other(np.zeros(2, np.int64))), np.int64(1))
    spec = tb.infer_spec([element] * 3, batched=False)
    code = spec.code()
    assert "pair = collections.namedtuple('pair', ['image', 'meta'], rename=True)" in code
    assert "pair_2 = collections.namedtuple('pair', ['a'], rename=True)" in code
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the code spec.code() writes, run as a user would
    signature = namespace["output_signature"]
    assert signature == spec.signature
    assert type(signature[0]).__name__ == "pair" and signature[0]._fields == ("image", "meta")
    assert signature[0].meta._fields == ("a",)
    assert namespace["inputs"].image.shape == (None, 8, 8, 3)

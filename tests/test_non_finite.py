"""NaN and Inf: finite=True in to_dataset and validate names the element and field; adapt_normalization warns,
skips or raises; validate lists every element that does not fit."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb


class NaNBatches:
    """Six batches of 2 rows; batches 2 and 4 hold a NaN in row 1."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        x = np.ones((2, 3), np.float32)
        if i in (2, 4):
            x[1, 2] = np.nan
        return x, np.zeros((2,), np.float32)


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.ones((10, 3), np.float32)
    x[4, 1] = np.nan
    x[7, 0] = np.inf
    return x, np.zeros((10,), np.float32)


def test_finite_arrays_are_refused_when_the_dataset_is_made_naming_the_first_row() -> None:
    with pytest.raises(tb.NonFiniteError, match=r"element 4 at x holds NaN at position \[4, 1\]") as info:
        tb.to_dataset(_arrays(), finite=True)
    assert (info.value.index, info.value.path) == (4, "x")
    assert "tb.validate(source, finite=True)" in str(info.value)
    assert len(list(tb.to_dataset(_arrays()))) == 10  # off by default: NaN passes as data


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_finite_python_source_names_the_batch_and_row_where_it_is_produced(executor: str) -> None:
    ds = tb.to_dataset(NaNBatches(), finite=True, executor=executor, batched=True)
    with pytest.raises(Exception, match=r"element 2 at x \(row 1 of the batch\) holds NaN at position \[1, 2\]"):
        list(ds)


def test_finite_tf_data_pipeline_fails_in_the_graph_naming_the_position() -> None:
    ds = tb.to_dataset(tf.data.Dataset.from_tensor_slices(_arrays()), finite=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"tfbridge: element\] \[4\] \[of the pipeline at x"):
        list(ds)


def test_finite_hf_dataset_names_the_example() -> None:
    import datasets

    x = [[1.0, 2.0], [3.0, float("nan")], [5.0, 6.0]]
    hf = datasets.Dataset.from_dict({"x": x, "y": [0, 1, 0]}).with_format("numpy")
    with pytest.raises(tb.NonFiniteError, match=r"element 1 at x\['x'\] holds NaN"):
        list(tb.to_dataset(hf, label="y", finite=True))


def test_validate_lists_every_element_that_holds_nan() -> None:
    with pytest.raises(tb.NonFiniteError) as info:
        tb.validate(NaNBatches(), finite=True, batched=True)
    assert [p.index for p in info.value.problems] == [2, 4]
    text = str(info.value)
    assert text.startswith("2 elements do not fit the spec:\n- element 2 at x (row 1 of the batch) holds NaN")
    assert "\n- element 4 at x (row 1 of the batch) holds NaN" in text
    assert tb.validate(NaNBatches(), batched=True) == 6  # without finite=True NaN is data


def test_validate_collects_shape_mismatches_up_to_max_problems() -> None:
    items = [np.zeros((3,), np.float32)] * 3 + [np.zeros((4,), np.float32)] * 5
    spec = tb.infer_spec(items[:3], batched=False)
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(items, spec, batched=False, max_problems=3)
    assert [p.index for p in info.value.problems] == [3, 4, 5]
    assert "3 elements do not fit the spec (stopped at max_problems=3; there may be more)" in str(info.value)
    with pytest.raises(tb.SpecMismatchError) as info:
        tb.validate(items, spec, batched=False, max_problems=1)
    assert info.value.problems == (info.value,)
    assert str(info.value).startswith("element 3 at ")


def test_finite_and_max_problems_are_checked() -> None:
    with pytest.raises(tb.TfBridgeError, match=r"finite must be True or False\. Received: 'yes'"):
        tb.to_dataset(_arrays(), finite="yes")  # type: ignore[arg-type]
    with pytest.raises(tb.TfBridgeError, match="finite must be True or False"):
        tb.validate(_arrays(), finite=1)  # type: ignore[arg-type]
    with pytest.raises(tb.TfBridgeError, match="max_problems"):
        tb.validate(_arrays(), max_problems=0)


def _normalize(**kwargs: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = tb.adapt_normalization(kwargs.pop("source"), **kwargs)
    return layer, [str(w.message) for w in caught if issubclass(w.category, tb.TfBridgeWarning)]


def test_adapt_normalization_warns_naming_the_first_element_and_the_count() -> None:
    x = np.random.default_rng(0).normal(size=(3000, 4)).astype(np.float32)
    x[2100, 2], x[2500, 1] = np.nan, np.inf
    layer, said = _normalize(source=x)
    assert len(said) == 1
    assert said[0].startswith("the features hold 2 NaN or Inf value(s), the first in element 2100 (an example)")
    assert 'non_finite="skip"' in said[0]
    assert np.isnan(np.asarray(layer.mean)).any()


def test_adapt_normalization_skip_leaves_out_the_rows_that_hold_them() -> None:
    x = np.random.default_rng(0).normal(size=(3000, 4)).astype(np.float32)
    x[2100, 2], x[2500, 1] = np.nan, np.inf
    layer, said = _normalize(source=x, non_finite="skip")
    clean = np.delete(x, [2100, 2500], axis=0).astype(np.float64)
    np.testing.assert_allclose(np.asarray(layer.mean)[0], clean.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.variance)[0], clean.var(0), rtol=1e-5)
    assert "left out of the mean and variance" in said[0]


def test_adapt_normalization_raise_names_the_batch_and_feature() -> None:
    with pytest.raises(tb.NonFiniteError, match=r"NaN or Inf in element 2 \(a batch\)"):
        tb.adapt_normalization(NaNBatches(), batched=True, executor="serial", non_finite="raise")


def test_adapt_normalization_non_finite_choice_is_checked() -> None:
    with pytest.raises(tb.TfBridgeError, match="non_finite"):
        tb.adapt_normalization(_arrays()[0], non_finite="ignore")  # type: ignore[arg-type]


def test_non_finite_error_from_a_worker_process_keeps_its_class_index_and_path() -> None:
    from tests._sources import Listed

    items = [np.ones((3,), np.float32) for _ in range(6)]
    items[5] = np.array([1.0, np.inf, 2.0], np.float32)
    ds = tb.to_dataset(Listed(items), batched=False, executor="process", workers=1, finite=True, timeout=60)
    with pytest.raises(Exception, match=r"NonFiniteError: element 5 at x holds Inf at position \[1\]"):
        list(ds)

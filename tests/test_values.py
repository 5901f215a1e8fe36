"""Python and numpy values as tensors: Python scalars and strings to TensorFlow dtypes, ragged lists to ragged
tensors, sparse tensors kept sparse, text byte for byte, zero-size and width-zero elements. Several are
regression tests of what fuzzing (test_fuzz.py) found."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _checks import check_delivered
from _sources import Listed

import tfbridge as tb


def test_ragged_python_lists_become_ragged_tensors_end_to_end() -> None:
    batches = [([[1, 2, 3], [4]], [0, 1]), ([[5], [6, 7], [8, 9, 10, 11]], [1, 0, 1])]
    spec = tb.infer_spec(batches)
    assert isinstance(spec.signature[0], tf.RaggedTensorSpec)
    assert spec.signature[0].shape.as_list() == [None, None]
    inputs = tb.keras_inputs(batches)
    assert inputs.ragged
    ds = tb.to_dataset(batches)
    got = [x.to_list() for x, _ in ds]
    assert got == [[[1, 2, 3], [4]], [[5], [6, 7], [8, 9, 10, 11]]]


def test_python_scalars_and_strings_map_to_tf_dtypes() -> None:
    def gen() -> Any:
        for i in range(3):
            yield {"i": i, "f": i / 2, "b": bool(i), "s": f"row{i}", "raw": b"x"}

    spec = tb.infer_spec(gen, batched=False)
    dtypes = {k: v.dtype for k, v in spec.signature.items()}
    assert dtypes == {"i": tf.int64, "f": tf.float64, "b": tf.bool, "s": tf.string, "raw": tf.string}
    ds = tb.to_dataset(gen, batched=False)
    last = list(ds)[-1]
    assert last["s"].numpy() == b"row2" and last["f"].dtype == tf.float32


def test_sparse_tensors_from_a_generator_arrive_sparse() -> None:
    def gen() -> Any:
        for i in range(3):
            yield tf.sparse.from_dense(tf.constant([[0.0, i], [i, 0.0]])), np.array([i, i])

    ds = tb.to_dataset(gen)
    assert isinstance(ds.element_spec[0], tf.SparseTensorSpec)
    dense = [tf.sparse.to_dense(x).numpy().tolist() for x, _ in ds]
    assert dense == [[[0.0, float(i)], [float(i), 0.0]] for i in range(3)]
    assert tb.keras_inputs(gen).sparse


def test_validate_none_still_converts_ragged_fields() -> None:
    batches = [([[1, 2], [3]],), ([[4], [5, 6, 7]],)]
    got = [x.to_list() for (x,) in tb.to_dataset(batches, validate="none")]
    assert got == [[[1, 2], [3]], [[4], [5, 6, 7]]]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["a", b"\xff"], id="str-and-non-ascii-bytes"),
        pytest.param(["a\x00", "b"], id="str-trailing-nul"),
        pytest.param([b"\x01\x00", b""], id="bytes-trailing-nul"),
        pytest.param([[b"a\x00"], [b"b", b"c"]], id="ragged-bytes-trailing-nul"),
        pytest.param([["a"], [b"\xff", "b\x00"]], id="ragged-str-and-bytes"),
    ],
)
def test_text_lists_mixing_str_bytes_and_nul_are_delivered_byte_for_byte(value: Any) -> None:
    (element,) = list(tb.to_dataset(Listed([value]), batched=False, executor="serial"))
    check_delivered(element, value)


def test_ragged_rows_of_width_zero_keep_their_batch_size() -> None:
    samples = [([[], [0]], np.zeros(2, bool)), ([[]], np.zeros(1, bool))]  # [[]] is a dense (1, 0) batch
    assert tb.validate(Listed(samples), batched=True) == 2
    delivered = list(tb.to_dataset(Listed(samples), batched=True, executor="serial", cast_floats=None))
    assert delivered[1][0].to_list() == [[]]


_ZERO_SIZE_SCRIPT = """
import numpy as np
import tfbridge as tb

class Listed:
    def __init__(self, items): self.items = items
    def __len__(self): return len(self.items)
    def __getitem__(self, i): return self.items[i]

empty_rows = tb.to_dataset(Listed([np.zeros((2, 0), np.float32)] * 3), batched=False, executor="serial")
empty_batch = tb.to_dataset(Listed([np.zeros((0, 3), np.float32)] * 2), batched=True, executor="serial")
print(len(list(empty_rows)), len(list(empty_batch)))
"""


@pytest.mark.timeout(150)
def test_zero_size_elements_of_an_indexed_source_are_delivered() -> None:
    """In a subprocess: before its fix, TensorFlow's unbatch() crashed the whole process on such elements."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _ZERO_SIZE_SCRIPT], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, f"the process died (return code {done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.split() == ["3", "2"]


def test_pil_images_from_an_indexed_source_become_uint8_arrays() -> None:
    image_module = pytest.importorskip("PIL.Image")

    class Images:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return image_module.fromarray(np.full((4, 6, 3), i, np.uint8)), i

    spec = tb.infer_spec(Images(), batched=False)
    assert dict(spec.fields()) == {"x": tb.Leaf((4, 6, 3), "uint8"), "y": tb.Leaf((), "int64")}
    got = [(x.numpy(), int(y)) for x, y in tb.to_dataset(Images(), batched=False, executor="serial")]
    assert [y for _, y in got] == [0, 1, 2]
    assert all(x.shape == (4, 6, 3) and (x == y).all() for x, y in got)


def test_float8_fields_are_refused_by_name_with_a_conversion_to_make() -> None:
    import ml_dtypes
    import torch

    class Float8(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> Any:
            return torch.ones(2).to(torch.float8_e4m3fn), i

    for source, dtype in ((Float8(), "float8_e4m3fn"), (np.ones((4, 2), ml_dtypes.float8_e5m2), "float8_e5m2")):
        with pytest.raises(tb.SpecInferenceError, match=rf"dtype {dtype} is not supported by tfbridge; convert it in "
                           r"the source to float16, bfloat16 or float32"):  # fmt: skip
            tb.to_dataset(source)

"""Strings everywhere: str, bytes, object arrays of text and tf.string tensors (as HuggingFace's
``.with_format("tf")`` gives them), scalar and ragged, through every executor and through the chunks that carry
small elements of an indexed source into tf.data."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge import _chunks

pytestmark = pytest.mark.timeout(240)

N = 23
EXECUTORS = ["serial", "thread", "process"]


def _text(i: int) -> str:
    return ("ünï" if i % 3 else "row") + "-" * (i % 4) + str(i)  # lengths vary from the first elements on


def _raw(i: int) -> bytes:
    return bytes([0, 255, i]) + b"\x00"  # a NUL first and last, and bytes that are no UTF-8: kept as they are


def _words(i: int) -> list[str]:
    return [f"w{i}.{j}" for j in range(i % 4)]  # 0 to 3 words: the length varies, and is 0 now and then


def _lines(i: int) -> list[list[str]]:
    return [[f"l{i}"] * (j + 1) for j in range(i % 3 + 1)]  # rows of unequal length inside one element


def example(i: int, nested: bool = False) -> Any:
    features = {
        "n": np.float32(i),
        "raw": _raw(i),
        "words": _words(i),
        "token": tf.constant(f"t{i}".encode()),  # a scalar tf.string EagerTensor
        "tokens": tf.constant([b"a", f"b{i}".encode()]),  # a 1-D tf.string EagerTensor
        "chars": np.array(list(_text(i)), dtype=object),  # a numpy object array of str
    }
    if nested:
        features["lines"] = _lines(i)
    return features, _text(i)


class Dense:
    """Every field dense within an element (small and fast: its elements travel in chunks)."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        return example(i)


class Nested:
    """Also a field with rows of unequal length inside an element (a ragged field: no chunks)."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        return example(i, nested=True)


def _dense_gen() -> Any:
    for i in range(N):
        yield example(i)


def _nested_gen() -> Any:
    for i in range(N):
        yield example(i, nested=True)


def _check(elements: list[Any], nested: bool) -> None:
    assert len(elements) == N
    for i, (features, label) in enumerate(elements):
        assert label.numpy() == _text(i).encode()
        assert features["n"].numpy() == i
        assert features["raw"].numpy() == _raw(i)
        assert features["words"].numpy().tolist() == [w.encode() for w in _words(i)]
        assert features["token"].numpy() == f"t{i}".encode()
        assert features["tokens"].numpy().tolist() == [b"a", f"b{i}".encode()]
        assert features["chars"].numpy().tolist() == [c.encode() for c in _text(i)]
        if nested:
            assert features["lines"].to_list() == [[w.encode() for w in row] for row in _lines(i)]


def _signature_checks(ds: Any, nested: bool) -> None:
    features, label = ds.element_spec
    assert label == tf.TensorSpec((), tf.string)
    assert features["raw"] == tf.TensorSpec((), tf.string)
    assert features["token"] == tf.TensorSpec((), tf.string)
    assert features["words"] == tf.TensorSpec((None,), tf.string)
    assert features["tokens"] == tf.TensorSpec((2,), tf.string)
    assert features["chars"] == tf.TensorSpec((None,), tf.string)
    if nested:
        assert isinstance(features["lines"], tf.RaggedTensorSpec)
        assert features["lines"].dtype == tf.string and features["lines"].shape.as_list() == [None, None]


@pytest.fixture
def chunk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fields stacked into chunks."""
    calls: list[int] = []
    real = _chunks.stack_column

    def counting(column: Any) -> Any:
        calls.append(1)
        return real(column)

    monkeypatch.setattr(_chunks, "stack_column", counting)
    return calls


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("nested", [False, True], ids=["dense", "ragged"])
def test_an_indexed_source_of_strings_gives_every_element_once_in_order(
    executor: str, nested: bool, chunk_calls: list[int]
) -> None:
    source = Nested() if nested else Dense()
    ds = tb.to_dataset(source, batched=False, executor=executor, workers=2)
    _signature_checks(ds, nested)
    _check(list(ds), nested)
    _check(list(ds), nested)  # a second epoch: the same
    assert bool(chunk_calls) is not nested  # small dense elements came in chunks; ragged ones one by one


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("nested", [False, True], ids=["dense", "ragged"])
def test_a_generator_of_strings_gives_every_element_once_in_order(executor: str, nested: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workers = None if executor == "serial" else 2  # workers= with serial is named too (another test)
        ds = tb.to_dataset(_nested_gen if nested else _dense_gen, batched=False, executor=executor, workers=workers)
    unused = [w for w in caught if issubclass(w.category, tb.TfBridgeWarning)]
    assert bool(unused) is (executor != "serial")  # a stream is read by one reader, and says so
    _signature_checks(ds, nested)
    _check(list(ds), nested)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_strings_shuffle_and_batch_through_every_executor(executor: str) -> None:
    ds = tb.to_dataset(Dense(), batched=False, executor=executor, workers=2, shuffle=True, seed=3)
    labels = [label.numpy() for _, label in ds]
    assert sorted(labels) == sorted(_text(i).encode() for i in range(N)) and labels != sorted(labels)
    batches = list(tb.pad_batch(Dense(), 5, executor=executor, workers=2))
    assert sum(len(label) for _, label in batches) == N
    first = batches[0][0]
    assert first["words"].numpy().tolist()[1] == [b"w1.0", b"", b""]  # padded with b"" to the longest of 5
    assert first["raw"].numpy().tolist() == [_raw(i) for i in range(5)]


def test_keras_inputs_of_string_fields_are_string_inputs() -> None:
    inputs = tb.keras_inputs(Nested(), batched=False)
    for name in ("raw", "words", "token", "tokens", "chars", "lines"):
        assert inputs[name].dtype == "string", name
    assert tuple(inputs["token"].shape) == (None,)
    assert tuple(inputs["words"].shape) == (None, None)
    assert tuple(inputs["tokens"].shape) == (None, 2)
    assert inputs["lines"].ragged
    assert tb.infer_spec(_dense_gen, batched=False).labels == tf.TensorSpec((), tf.string)


# -- the chunks themselves -------------------------------------------------------------------------------------


def test_chunks_stack_text_leaves_of_every_form_into_object_arrays() -> None:
    elements = [
        ({"s": "abc", "b": b"\x00\xff\x00", "u": np.array("ü"), "o": np.array(["x"], dtype=object)}, b"y"),
        ({"s": b"de", "b": np.array(b"z"), "u": np.array(b"\xff"), "o": np.array([b"\x00"], dtype=object)}, "y2"),
    ]
    (chunk,) = list(_chunks.chunked(elements))
    features, labels = chunk
    assert features["s"].dtype == object and features["s"].tolist() == ["abc", b"de"]
    assert features["b"].tolist() == [b"\x00\xff\x00", b"z"]  # the NULs are kept: no fixed-width bytes
    assert features["u"].tolist() == ["ü", b"\xff"]  # str and bytes together: neither decoded nor encoded
    assert features["o"].shape == (2, 1) and features["o"].tolist() == [["x"], [b"\x00"]]
    assert labels.tolist() == [b"y", "y2"]
    as_tf = tf.constant(features["b"])
    assert as_tf.numpy().tolist() == [b"\x00\xff\x00", b"z"]


def test_chunks_count_the_text_of_string_leaves_toward_the_chunk_size() -> None:
    big = b"x" * (_chunks.CHUNK_MAX_BYTES // 2)
    chunks = list(_chunks.chunked([(big, np.int64(i)) for i in range(5)]))
    assert [len(c[1]) for c in chunks] == [2, 2, 1]  # cut by the bytes of the text, not by its pointers
    assert [int(v) for c in chunks for v in c[1]] == list(range(5))


def test_chunks_cut_where_the_shape_of_a_text_field_changes() -> None:
    elements = [np.array(["a"] * n, dtype=object) for n in (1, 1, 2, 2, 2, 0)]
    chunks = list(_chunks.chunked(elements))
    assert [c.shape for c in chunks] == [(2, 1), (3, 2), (1, 0)]


class _Rows:
    """Index a HuggingFace dataset as a plain indexed source (its own adapter is not under test here)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[i]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_rows_of_a_huggingface_dataset_in_tf_format_carry_their_strings(executor: str) -> None:
    datasets = pytest.importorskip("datasets")
    words = [_words(i) for i in range(N)]
    data = datasets.Dataset.from_dict({"text": [_text(i) for i in range(N)], "words": words, "label": list(range(N))})
    rows = _Rows(data.with_format("tf"))
    assert isinstance(rows[0]["text"], tf.Tensor) and rows[0]["text"].dtype == tf.string  # EagerTensors
    ds = tb.to_dataset(rows, batched=False, executor=executor, workers=2)
    assert ds.element_spec["text"] == tf.TensorSpec((), tf.string)
    got = [(e["text"].numpy(), e["words"].numpy().tolist(), int(e["label"])) for e in ds]
    assert got == [(_text(i).encode(), [w.encode() for w in words[i]], i) for i in range(N)]


@pytest.mark.parametrize("text", [np.array(["ok", "\ud800"]), "a\udcff", np.array(["x", "\udc80"], dtype=object)])
def test_text_utf8_cannot_encode_is_refused_naming_element_and_field(text: Any) -> None:
    class Files:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return {"name": text if i == 2 else "fine", "n": np.int64(i)}

    want = r"element 2 at x\['name'\]: text holding '\\ud[8c]\w\w', which UTF-8"
    with pytest.raises(tb.SpecInferenceError, match=want):
        tb.to_dataset(Files(), batched=False)

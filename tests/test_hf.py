"""HuggingFace ``datasets`` with the real package: a ``Dataset`` read in slices through Arrow (in memory, or in blocks
beyond the memory budget), an ``IterableDataset`` as a stream. Every dataset is built here (no hub)."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from typing import Any

import datasets
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge.sources import hf

pytestmark = pytest.mark.timeout(300)

N = 40
LABELS = [i % 2 for i in range(N)]


def _fixed(n: int = N) -> datasets.Dataset:
    features = datasets.Features(
        {
            "x": datasets.Value("float32"),
            "wide": datasets.Value("float64"),
            "count": datasets.Value("int32"),
            "pair": datasets.List(datasets.Value("float32"), length=2),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
        }
    )
    data = {
        "x": [i / 4 for i in range(n)],
        "wide": [i * 1.5 for i in range(n)],
        "count": [3 * i for i in range(n)],
        "pair": [[i, -i] for i in range(n)],
        "label": [i % 2 for i in range(n)],
    }
    return datasets.Dataset.from_dict(data, features=features)


def _tokens(n: int = N) -> datasets.Dataset:
    features = datasets.Features({"tokens": datasets.List(datasets.Value("int32")), "label": datasets.Value("int64")})
    tokens = [list(range(1 + i % 7, 1 + i % 7 + (i * 5) % 11)) for i in range(n)]  # 0 to 10 ids, some empty
    return datasets.Dataset.from_dict({"tokens": tokens, "label": LABELS[:n]}, features=features)


def _strings(n: int = N) -> datasets.Dataset:
    text = [f"text-{'é' * (i % 3)}{i}" for i in range(n)]
    return datasets.Dataset.from_dict({"text": text, "score": [float(i) for i in range(n)], "label": LABELS[:n]})


@pytest.fixture(params=["memory", "blocks"])
def route(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each Dataset test runs in memory and in blocks (the dataset taken as bigger than the memory budget,
    in blocks of a few examples, so that every dataset spans several blocks)."""
    if request.param == "blocks":
        monkeypatch.setattr(hf, "memory_budget", lambda: 0)
        monkeypatch.setattr(hf, "BLOCK_ROWS", (3, 7))
    return str(request.param)


def _expect_route(ds: Any, route: str) -> None:
    kind = type(tb.sources.adapt(ds)).__name__
    assert kind == ("HFArraysSource" if route == "memory" else "HFBlockSource")


def _rows(ds: Any) -> list[dict[str, Any]]:
    """The examples as datasets gives them, in python, in the dataset's order."""
    plain = ds.with_format(None)
    return [plain[i] for i in range(len(plain))]


def _py(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _py(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_py(v) for v in value)
    return value


def _examples(dataset: Any) -> list[Any]:
    return [_py(e) for e in dataset.as_numpy_iterator()]


def _approx(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_approx(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_approx(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b))
    return bool(a == b)


def _fit_one_epoch(source: Any, dataset: Any, label: str = "label") -> None:
    """A tiny Keras model on the source's inputs, fitted for one epoch on ``dataset``."""
    inputs = tb.keras_inputs(source, label=label)
    parts = []
    for inp in inputs.values():
        if inp.dtype == "string":
            hashed = keras.layers.Hashing(num_bins=16)(inp)
            parts.append(keras.layers.Embedding(16, 4)(hashed))
        elif len(inp.shape) == 2 and inp.shape[1] is None:  # token ids, padded
            embedded = keras.layers.Embedding(64, 4)(inp)
            parts.append(keras.layers.GlobalAveragePooling1D()(embedded))
        else:
            value = keras.ops.cast(inp, "float32")
            parts.append(keras.ops.reshape(value, (-1, int(np.prod(inp.shape[1:])))))
    joined = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    model = keras.Model(inputs, keras.layers.Dense(1)(joined))
    model.compile("adam", "mse")
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# -- fixed features ------------------------------------------------------------------------------------------------
def test_fixed_features_spec_inputs_values_and_fit(route: str) -> None:
    ds = _fixed()
    _expect_route(ds, route)
    spec = tb.infer_spec(ds)
    fields = {path: (leaf.dtype, leaf.shape) for path, leaf in spec.fields()}
    assert fields == {
        "x['count']": ("int32", ()),
        "x['label']": ("int64", ()),  # ClassLabel
        "x['pair']": ("float32", (2,)),  # a fixed-length list: a dense dimension
        "x['wide']": ("float64", ()),  # the data as it is
        "x['x']": ("float32", ()),
    }
    inputs = tb.keras_inputs(ds, label="label")
    assert sorted(inputs) == ["count", "pair", "wide", "x"]
    assert inputs["wide"].dtype == "float32" and tuple(inputs["pair"].shape) == (None, 2)

    examples = _examples(tb.to_dataset(ds))
    assert _approx(examples, _rows(ds))  # every example once, in order, with the dataset's values

    batched = tb.to_dataset(ds, label="label", batch_size=32)
    features, labels = batched.element_spec
    assert sorted(features) == ["count", "pair", "wide", "x"] and labels.shape.as_list() == [None]
    assert features["wide"].dtype == tf.float32 and features["pair"].shape.as_list() == [None, 2]
    got = list(batched.as_numpy_iterator())
    assert [len(y) for _, y in got] == [32, N - 32]
    assert np.concatenate([y for _, y in got]).tolist() == LABELS
    assert np.concatenate([x["count"] for x, _ in got]).tolist() == [3 * i for i in range(N)]
    _fit_one_epoch(ds, batched)


def test_shuffle_with_a_seed_is_a_permutation_each_epoch(route: str) -> None:
    ds = _fixed()
    dataset = tb.to_dataset(ds, shuffle=True, seed=7)
    first = [e["count"] // 3 for e in _examples(dataset)]
    second = [e["count"] // 3 for e in _examples(dataset)]
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != list(range(N)) and first != second  # shuffled, and anew each epoch
    if route == "blocks":  # the permutations are the seed's own
        assert [e["count"] // 3 for e in _examples(tb.to_dataset(ds, shuffle=True, seed=7))] == first


# -- token lists ---------------------------------------------------------------------------------------------------
def test_token_lists_are_ragged_rows_padded_by_pad_batch(route: str) -> None:
    ds = _tokens()
    _expect_route(ds, route)
    spec = tb.infer_spec(ds)
    assert dict(spec.fields())["x['tokens']"] == tb.Leaf((None,), "int32")
    examples = _examples(tb.to_dataset(ds, label="label"))
    rows = _rows(ds)
    assert [(x["tokens"], y) for x, y in examples] == [(r["tokens"], r["label"]) for r in rows]

    padded = tb.pad_batch(tb.to_dataset(ds, label="label"), 32)
    features, labels = padded.element_spec
    assert features["tokens"].shape.as_list() == [None, None] and features["tokens"].dtype == tf.int32
    assert labels.shape.as_list() == [None]
    start = 0
    for x, y in padded.as_numpy_iterator():
        chunk = rows[start : start + len(y)]
        longest = max(len(r["tokens"]) for r in chunk)
        assert x["tokens"].shape == (len(chunk), longest)  # each batch padded to its own longest
        for row, r in zip(x["tokens"], chunk, strict=True):
            assert row[: len(r["tokens"])].tolist() == r["tokens"] and not row[len(r["tokens"]) :].any()
        assert y.tolist() == [r["label"] for r in chunk]
        start += len(y)
    assert start == N
    _fit_one_epoch(ds, padded)


def test_batch_size_on_token_lists_says_to_use_pad_batch(route: str) -> None:
    with pytest.raises(tb.TfBridgeError, match=r"batch_size cannot stack x\['tokens'\].*\nHint: use tb.pad_batch"):
        tb.to_dataset(_tokens(), label="label", batch_size=8)


# -- strings -------------------------------------------------------------------------------------------------------
def test_string_features(route: str) -> None:
    ds = _strings()
    _expect_route(ds, route)
    assert dict(tb.infer_spec(ds).fields())["x['text']"] == tb.Leaf((), "string")
    inputs = tb.keras_inputs(ds, label="label")
    assert inputs["text"].dtype == "string"
    examples = _examples(tb.to_dataset(ds))
    assert examples == _rows(ds)  # non-ASCII text round-trips
    _fit_one_epoch(ds, tb.to_dataset(ds, label="label", batch_size=16))


# -- formats, indices mappings, selected columns ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [None, "python", "numpy", "tf", "arrow", "torch", "pandas"])
def test_every_format_reads_the_same_examples(fmt: str | None, route: str) -> None:
    base = _tokens().add_column("text", [f"t{i}" for i in range(N)])
    ds = base.with_format(fmt)
    _expect_route(ds, route)
    assert tb.infer_spec(ds) == tb.infer_spec(base)
    assert _examples(tb.to_dataset(ds, label="label")) == [
        ({"text": r["text"], "tokens": r["tokens"]}, r["label"]) for r in _rows(base)
    ]


@pytest.mark.parametrize(
    "view",
    [
        lambda ds: ds.shuffle(seed=3),
        lambda ds: ds.select([5, 1, 30, 2, 2, 17]),  # repeats are kept
        lambda ds: ds.select(range(10, 25)),  # contiguous
        lambda ds: ds.filter(lambda e: e["count"] % 9 == 0),
        lambda ds: ds.shuffle(seed=1).filter(lambda e: e["label"] == 1).select(range(5)),
    ],
    ids=["shuffled", "selected", "contiguous", "filtered", "chained"],
)
def test_a_dataset_with_an_indices_mapping_is_read_in_its_own_order(view: Any, route: str) -> None:
    ds = view(_fixed())
    _expect_route(ds, route)
    examples = _examples(tb.to_dataset(ds, label="label"))
    assert _approx(examples, [({k: v for k, v in r.items() if k != "label"}, r["label"]) for r in _rows(ds)])
    assert len(examples) == len(ds)
    _fit_one_epoch(ds, tb.to_dataset(ds, label="label", batch_size=4, shuffle=True, seed=0))


def test_the_columns_a_format_selects_are_the_columns_read(route: str) -> None:
    ds = _fixed().with_format("numpy", columns=["count", "label"])
    _expect_route(ds, route)
    assert [p for p, _ in tb.infer_spec(ds).fields()] == ["x['count']", "x['label']"]
    assert _examples(tb.to_dataset(ds, label="label")) == [({"count": 3 * i}, i % 2) for i in range(N)]
    _fit_one_epoch(ds, tb.to_dataset(ds, label="label", batch_size=8))
    everything = _fixed().with_format("numpy", columns=["count"], output_all_columns=True)
    assert len(list(tb.infer_spec(everything).fields())) == 5  # output_all_columns: every column, as ds[i] gives


# -- nested features ------------------------------------------------------------------------------------------------
def test_dicts_lists_of_dicts_arrays_and_lists_of_lists(route: str) -> None:
    features = datasets.Features(
        {
            "meta": {"id": datasets.Value("int64"), "tags": datasets.List(datasets.Value("string"))},
            "spans": datasets.List({"start": datasets.Value("int32"), "text": datasets.Value("string")}),
            "image": datasets.Array2D((2, 3), "float32"),
            "nested": datasets.List(datasets.List(datasets.Value("int64"))),
        }
    )
    n = 9
    data = {
        "meta": [{"id": i, "tags": ["a"] * (i % 3)} for i in range(n)],
        "spans": [[{"start": j, "text": f"s{j}"} for j in range(i % 4)] for i in range(n)],
        "image": [np.full((2, 3), i, np.float32) for i in range(n)],
        "nested": [[[k] * (k + i % 2) for k in range(i % 3)] for i in range(n)],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    _expect_route(ds, route)
    fields = dict(tb.infer_spec(ds).fields())
    assert fields == {
        "x['image']": tb.Leaf((2, 3), "float32"),
        "x['meta']['id']": tb.Leaf((), "int64"),
        "x['meta']['tags']": tb.Leaf((None,), "string"),
        "x['nested']": tb.Leaf((None, None), "int64", "ragged", 1),  # inner lengths vary too
        "x['spans']['start']": tb.Leaf((None,), "int32"),  # a list of dicts: a dict of lists, as datasets gives it
        "x['spans']['text']": tb.Leaf((None,), "string"),
    }
    got = list(tb.to_dataset(ds).as_numpy_iterator())
    for i, e in enumerate(got):
        assert e["meta"]["id"] == i and [t.decode() for t in e["meta"]["tags"]] == ["a"] * (i % 3)
        assert e["spans"]["start"].tolist() == list(range(i % 4))
        assert [t.decode() for t in e["spans"]["text"]] == [f"s{j}" for j in range(i % 4)]
        assert e["image"].tolist() == np.full((2, 3), i).tolist()
        assert [r.tolist() for r in e["nested"]] == data["nested"][i]


def test_a_fixed_length_list_and_lists_that_happen_to_have_one_length() -> None:
    equal = datasets.Dataset.from_dict({"v": [[i, i + 1, i + 2] for i in range(6)]})  # List, every row 3 long
    assert dict(tb.infer_spec(equal).fields())["x['v']"] == tb.Leaf((3,), "int64")  # the data as it is
    assert tb.to_dataset(equal, batch_size=4).element_spec["v"].shape.as_list() == [None, 3]


def test_value_types_become_their_numpy_dtypes(route: str) -> None:
    features = datasets.Features(
        {
            "flag": datasets.Value("bool"),
            "half": datasets.Value("float16"),
            "small": datasets.Value("uint8"),
            "blob": datasets.Value("binary"),
            "long_text": datasets.Value("large_string"),
            "big": datasets.LargeList(datasets.Value("int64")),
        }
    )
    n = 7
    data = {
        "flag": [i % 2 == 0 for i in range(n)],
        "half": [i / 2 for i in range(n)],
        "small": list(range(n)),
        "blob": [bytes([i, 0, 255]) for i in range(n)],
        "long_text": [f"l{i}" for i in range(n)],
        "big": [list(range(i)) for i in range(n)],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    _expect_route(ds, route)
    assert dict(tb.infer_spec(ds).fields()) == {
        "x['big']": tb.Leaf((None,), "int64"),
        "x['blob']": tb.Leaf((), "string"),
        "x['flag']": tb.Leaf((), "bool"),
        "x['half']": tb.Leaf((), "float16"),
        "x['long_text']": tb.Leaf((), "string"),
        "x['small']": tb.Leaf((), "uint8"),
    }
    got = list(tb.to_dataset(ds).as_numpy_iterator())
    assert [e["blob"] for e in got] == data["blob"]  # bytes stay bytes
    assert [bool(e["flag"]) for e in got] == data["flag"] and [e["big"].tolist() for e in got] == data["big"]


def test_datasets_on_disk_mapped_and_concatenated(route: str, tmp_path: Any) -> None:
    ds = _tokens()
    ds.save_to_disk(str(tmp_path / "saved"), max_shard_size="1KB")  # several files: a table in many chunks
    loaded = datasets.load_from_disk(str(tmp_path / "saved"))
    mapped = loaded.map(lambda e: {"n": len(e["tokens"])}, writer_batch_size=8)  # cached on disk, in record batches
    both = datasets.concatenate_datasets([mapped.select(range(5)), mapped.shuffle(seed=2)])
    for each in (loaded, mapped, both):
        _expect_route(each, route)
        rows = _rows(each)
        assert [(x["tokens"], y) for x, y in _examples(tb.to_dataset(each.select_columns(["tokens", "label"]),
                                                                      label="label"))] == [
            (r["tokens"], r["label"]) for r in rows
        ]  # fmt: skip
    assert [e["n"] for e in _examples(tb.to_dataset(both))] == [len(r["tokens"]) for r in _rows(both)]


# -- numbers without copies; never one example at a time ----------------------------------------------------------
def test_numeric_columns_are_read_without_a_copy() -> None:
    ds = _fixed()
    src = tb.sources.adapt(ds)
    arrow = ds.data.table.column("count").chunk(0).to_numpy()
    assert np.shares_memory(src.columns["count"], arrow)


def test_a_dataset_is_never_read_one_example_at_a_time(route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys: list[Any] = []
    original = datasets.Dataset.__getitem__

    def recording(self: Any, key: Any) -> Any:
        keys.append(key)
        return original(self, key)

    monkeypatch.setattr(datasets.Dataset, "__getitem__", recording)
    for ds in (_fixed().shuffle(seed=0), _tokens(), _fixed().with_transform(lambda b: {"x": b["x"]})):
        tb.keras_inputs(ds)
        list(tb.to_dataset(ds, shuffle=True, seed=1))
        tb.validate(ds)
    assert not [k for k in keys if isinstance(k, (int, np.integer))]


# -- datasets' own formatting: transforms and decoded features ------------------------------------------------------
def test_a_custom_transform_runs_once_per_block() -> None:
    calls: list[int] = []

    def transform(batch: dict[str, list[Any]]) -> dict[str, Any]:
        calls.append(len(batch["count"]))
        return {"double": [2 * c for c in batch["count"]], "tokens": batch["pair"], "label": batch["label"]}

    ds = _fixed().with_transform(transform)
    src = tb.sources.adapt(ds)
    assert type(src).__name__ == "HFBlockSource" and "its transform runs once per block" in str(src.native_route)
    assert dict(tb.infer_spec(ds).fields())["x['double']"] == tb.Leaf((), "int64")
    dataset = tb.to_dataset(ds, label="label")
    calls.clear()
    examples = _examples(dataset)
    assert examples == [({"double": 6 * i, "tokens": [float(i), -float(i)]}, i % 2) for i in range(N)]
    assert calls == [N]  # an epoch of 40 examples: one block, one call
    _fit_one_epoch(ds, tb.to_dataset(ds, label="label", batch_size=8))


def test_images_are_decoded_by_datasets_a_block_at_a_time() -> None:
    pytest.importorskip("PIL")
    images = [np.full((4 + i % 3, 5 + i % 2, 3), i, np.uint8) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": images, "label": list(range(6))}, features=features)
    assert dict(tb.infer_spec(ds).fields())["x['image']"] == tb.Leaf((None, None, 3), "uint8")
    dataset = tb.to_dataset(ds, label="label")
    assert dataset.element_spec[0]["image"] == tf.TensorSpec((None, None, 3), tf.uint8)
    got = list(dataset.as_numpy_iterator())
    assert [y for _, y in got] == list(range(6))
    assert all(np.array_equal(x["image"], im) for (x, _), im in zip(got, images, strict=True))


# -- IterableDataset ------------------------------------------------------------------------------------------------
def test_an_iterable_dataset_of_images_gives_them_as_arrays() -> None:
    # streamed image datasets yield PIL images; recent Pillow exposes only __array_interface__ (no __array__)
    pytest.importorskip("PIL")
    images = [np.full((4 + i % 3, 5, 3), i, np.uint8) for i in range(5)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": images, "label": list(range(5))}, features=features)
    ids = table.to_iterable_dataset()
    assert dict(tb.infer_spec(ids, label="label").fields())["x['image']"] == tb.Leaf((None, 5, 3), "uint8")
    got = list(tb.to_dataset(ids, label="label").as_numpy_iterator())
    assert [y for _, y in got] == list(range(5))
    assert all(np.array_equal(x["image"], im) for (x, _), im in zip(got, images, strict=True))


def test_an_iterable_dataset_is_a_stream_of_examples_in_numpy() -> None:
    ids = _tokens().to_iterable_dataset(num_shards=2)
    src = tb.sources.adapt(ids)
    assert type(src).__name__ == "StreamSource" and not src.batched
    spec = tb.infer_spec(ids, label="label")
    assert dict(spec.fields()) == {"x['tokens']": tb.Leaf((None,), "int32"), "y": tb.Leaf((), "int64")}
    assert isinstance(src.peek(1).samples[0][1]["tokens"], np.ndarray)  # elements converted to numpy
    rows = _rows(_tokens())
    examples = _examples(tb.to_dataset(ids, label="label"))
    assert [(x["tokens"], y) for x, y in examples] == [(r["tokens"], r["label"]) for r in rows]
    padded = tb.pad_batch(tb.to_dataset(ids, label="label"), 16)
    assert sum(len(y) for _, y in padded.as_numpy_iterator()) == N
    _fit_one_epoch(ids, padded)
    with pytest.raises(tb.TfBridgeError, match=r"shuffle=True needs random access.*\nHint: shuffle the result"):
        tb.to_dataset(ids, shuffle=True)


def test_an_iterable_dataset_without_features_and_with_nulls() -> None:
    def gen() -> Any:
        for i in range(5):
            yield {"x": i, "ids": [i] * i, "name": f"n{i}"}

    ids = datasets.IterableDataset.from_generator(gen)
    assert dict(tb.infer_spec(ids).fields()) == {
        "x['ids']": tb.Leaf((None,), "int64"),  # an empty first list takes the others' dtype
        "x['name']": tb.Leaf((), "string"),
        "x['x']": tb.Leaf((), "int64"),
    }
    assert [e["ids"] for e in _examples(tb.to_dataset(ids))] == [[i] * i for i in range(5)]

    def with_null() -> Any:
        yield {"x": 1}
        yield {"x": None}

    with pytest.raises(tb.SpecInferenceError, match=r"x\['x'\] is null \(None\): .*\nHint: fill the nulls first"):
        list(tb.to_dataset(datasets.IterableDataset.from_generator(with_null)))


# -- other tfbridge functions over a Dataset --------------------------------------------------------------------------
def test_validate_inspect_and_materialize(route: str, tmp_path: Any) -> None:
    ds = _tokens()
    assert tb.validate(ds) == N and tb.validate(ds, label="label", limit=5) == 5
    assert tb.inspect(ds).executor["name"] == "native"
    saved = tb.materialize(ds, tmp_path / "m", label="label", shards=3, verbose=False)
    assert [(x["tokens"], y) for x, y in _examples(saved)] == [(r["tokens"], r["label"]) for r in _rows(ds)]
    wrong = tb.Spec.from_signature({"label": tf.TensorSpec((), tf.int64), "tokens": tf.TensorSpec((3,), tf.int32)})
    with pytest.raises(tb.SpecMismatchError, match=r"element 0 at x\['tokens'\]: expected shape \(3,\)"):
        tb.validate(ds, wrong)


def test_each_row_a_batch_with_batched_true() -> None:
    rows = [np.zeros((2 + i, 3)).tolist() for i in range(4)]
    ds = datasets.Dataset.from_dict({"x": rows, "n": [[i] * (2 + i) for i in range(4)]})
    assert dict(tb.infer_spec(ds, batched=True).fields())["x['x']"] == tb.Leaf((None, 3), "float64")
    assert [x["x"].shape for x in tb.to_dataset(ds, batched=True).as_numpy_iterator()] == [(2 + i, 3) for i in range(4)]



def _rows_of(dataset: Any) -> list[tuple[int, ...]]:
    return [tuple(x["y"].tolist()) for x in tb.to_dataset(dataset).as_numpy_iterator()]


def test_the_rows_of_dataset_batch_are_taken_as_batches_with_a_warning() -> None:
    ds = datasets.Dataset.from_dict({"x": np.arange(20.0).reshape(10, 2).tolist(), "y": list(range(10))})
    message = (
        r"every column of this datasets\.Dataset holds a list of 4 values in each row but one, which holds 2, as the "
        r"rows of Dataset\.batch\(4\) do: each row is taken as a batch\.\nHint: pass batched=False"
    )
    with pytest.warns(tb.TfBridgeWarning, match=message):
        spec = tb.infer_spec(ds.batch(4))
    assert spec.batched and dict(spec.fields())["x['x']"] == tb.Leaf((None, 2), "float64")
    with pytest.warns(tb.TfBridgeWarning, match=message):
        assert _rows_of(ds.batch(4)) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    with pytest.warns(tb.TfBridgeWarning, match=message):  # the short batch anywhere: shuffled rows
        assert sorted(_rows_of(ds.batch(4).shuffle(seed=1))) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)
        assert not tb.infer_spec(ds.batch(4), batched=False).batched  # said: no guess, no warning
        assert _rows_of(ds.batch(5)) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]  # rows of one length: examples
        assert not tb.infer_spec(ds.batch(5)).batched


def test_lists_of_different_lengths_or_beside_a_scalar_stay_examples_without_a_warning() -> None:
    tokens = {"ids": [[1, 2, 3], [4, 5, 6], [7]], "mask": [[1, 1, 1], [1, 1, 1], [1]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)
        assert not tb.infer_spec(datasets.Dataset.from_dict({**tokens, "label": [0, 1, 0]})).batched
        unequal = {"ids": tokens["ids"], "mask": [[1, 1, 1], [1, 1], [1]]}  # columns of other lengths in a row
        assert not tb.infer_spec(datasets.Dataset.from_dict(unequal)).batched
        varied = {"ids": [[1, 2, 3], [4, 5], [7]]}  # more than one row shorter than the longest
        assert not tb.infer_spec(datasets.Dataset.from_dict(varied)).batched
        two = {"ids": [[1, 2, 3], [4, 5]]}  # two rows of lists could be anything
        assert not tb.infer_spec(datasets.Dataset.from_dict(two)).batched


def test_rows_of_images_batched_by_datasets_stay_as_datasets_decodes_them() -> None:
    from PIL import Image

    images = [Image.fromarray(np.full((4, 4, 3), i, np.uint8)) for i in range(10)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"img": images, "label": list(range(10))}, features=features).batch(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)  # features datasets decodes: their rows are not guessed
        assert not tb.infer_spec(ds).batched


def test_an_iterable_dataset_batched_by_its_own_pipeline_gives_batches() -> None:
    ds = datasets.Dataset.from_dict({"x": np.arange(20.0).reshape(10, 2).tolist(), "y": list(range(10))})
    for stream in (ds.to_iterable_dataset(), ds.to_iterable_dataset().with_format("numpy")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", tb.TfBridgeWarning)  # the pipeline says so: no guess
            batches = stream.batch(4)
            assert tb.infer_spec(batches).batched
            assert _rows_of(batches) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
            assert [x["x"].shape for x in tb.to_dataset(stream.batch(5)).as_numpy_iterator()] == [(5, 2), (5, 2)]
            assert not tb.infer_spec(stream).batched



def test_batches_of_token_lists_of_unequal_length_are_ragged_batches() -> None:
    ds = datasets.Dataset.from_dict({"tok": [[1, 2, 3], [4], [5, 6], [7], [8, 9]], "y": [0, 1, 0, 1, 0]})
    ragged = tf.RaggedTensorSpec([None, None], tf.int64, 1, tf.int64)
    for batches in (ds.to_iterable_dataset().batch(2), ds.batch(2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tb.TfBridgeWarning)  # map-style rows are a guess, said (tested above)
            spec = tb.infer_spec(batches)
            got = [(x["tok"].to_list(), x["y"].numpy().tolist()) for x in tb.to_dataset(batches)]
        assert spec.batched and spec.signature == {"tok": ragged, "y": tf.TensorSpec([None], tf.int64)}
        assert got == [([[1, 2, 3], [4]], [0, 1]), ([[5, 6], [7]], [0, 1]), ([[8, 9]], [0])]


def test_nested_lists_of_unequal_length_in_a_stream_keep_the_dtype_the_features_declare() -> None:
    features = datasets.Features({"tok": datasets.Sequence(datasets.Sequence(datasets.Value("int32")))})
    rows = {"tok": [[[1, 2], [3]], [[4]], [[5, 6, 7], [8], [9]]]}
    stream = datasets.Dataset.from_dict(rows, features=features).to_iterable_dataset()
    spec = tb.infer_spec(stream)
    assert spec.signature == {"tok": tf.RaggedTensorSpec([None, None], tf.int32, 1, tf.int64)}
    assert [x["tok"].to_list() for x in tb.to_dataset(stream)] == rows["tok"]


def test_array2d_and_array3d_columns_are_tensors_of_their_shape() -> None:
    features = datasets.Features({"m": datasets.Array2D((2, 3), "float32"), "v": datasets.Array3D((2, 1, 2), "int32")})
    data = {
        "m": [np.full((2, 3), i).tolist() for i in range(4)],
        "v": [np.full((2, 1, 2), i).tolist() for i in range(4)],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    want = {"m": tf.TensorSpec((2, 3), tf.float32), "v": tf.TensorSpec((2, 1, 2), tf.int32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", tb.TfBridgeWarning)  # rows of one shape: examples, nothing guessed
        assert tb.infer_spec(ds).signature == want
        assert [int(x["v"][1, 0, 1]) for x in tb.to_dataset(ds)] == [0, 1, 2, 3]

# -- errors --------------------------------------------------------------------------------------------------------
def test_nulls_in_an_integer_column_are_an_error_naming_the_column(route: str) -> None:
    ds = datasets.Dataset.from_dict({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, None, 1]})
    pattern = (
        r"column x\['label'\] of the dataset has 1 missing value\(s\) \(nulls\) in the examples read, the first in "
        r"example 2\. tfbridge does not turn nulls into NaN or any other value .*\n"
        r"Hint: fill them first, e\.g\. ds\.map\(.*\), or drop those examples: "
        r"ds\.filter\(lambda e: e\['label'\] is not None\)\."
    )
    with pytest.raises(tb.SpecInferenceError, match=pattern) as info:
        tb.to_dataset(ds)
    assert info.value.path == "x['label']"
    clean = ds.filter(lambda e: e["label"] is not None)  # the way out the hint gives
    assert [y for _, y in _examples(tb.to_dataset(clean, label="label"))] == [0, 1, 1]


def test_nulls_inside_lists_are_an_error_too() -> None:
    ds = datasets.Dataset.from_dict({"tokens": [[1, 2], [3, None]], "label": [0, 1]})
    with pytest.raises(
        tb.SpecInferenceError,
        match=r"column x\['tokens'\] of the dataset has 1 missing value\(s\) \(nulls\) inside its lists .*\n"
        r"Hint: fill them first, .*ds\.filter\(lambda e: None not in e\['tokens'\]\)",
    ):
        tb.infer_spec(ds)


@pytest.mark.parametrize(
    ("values", "fill", "dtype"),
    [
        pytest.param(["a", None, "c"], "''", tf.string, id="string"),
        pytest.param([1.5, None, 2.0], "0.0", tf.float64, id="float"),
        pytest.param([1, None, 3], "0", tf.int64, id="int"),
        pytest.param([True, None, False], "False", tf.bool, id="bool"),
        pytest.param([["a", None], ["b"]], "''", tf.string, id="list-of-strings"),
    ],
)
def test_the_null_hint_runs_as_written_for_the_columns_type(values: list[Any], fill: str, dtype: Any) -> None:
    ds = datasets.Dataset.from_dict({"c": values})
    with pytest.raises(tb.SpecInferenceError) as info:
        tb.infer_spec(ds)
    code = re.search(r"ds\.map\((lambda e: .*?)\), or drop", str(info.value))
    assert code is not None, str(info.value)
    assert code.group(1).startswith(f"lambda e: {{'c': {'[' if isinstance(values[0], list) else ''}{fill} if ")
    filled = ds.map(eval(code.group(1)))  # the hint, as written
    assert tb.infer_spec(filled).signature["c"].dtype == dtype


def test_an_empty_dataset_is_said_to_be_empty_not_a_column_of_nulls() -> None:
    empty = datasets.Dataset.from_dict({"a": []})  # a column of no values has Arrow type null
    filtered = datasets.Dataset.from_dict({"a": [1, 2]}).filter(lambda e: False)
    for ds in (empty, filtered):
        with pytest.raises(tb.SpecInferenceError, match=r"^the dataset datasets\.arrow_dataset\.Dataset is empty"):
            tb.infer_spec(ds)


def test_errors_name_what_is_wrong(route: str) -> None:
    import datetime

    ds = _fixed()
    with pytest.raises(tb.TfBridgeError, match=r"label column\(s\) \['nope'\] not found. The element has the columns"):
        tb.to_dataset(ds, label="nope")
    with pytest.raises(tb.SpecInferenceError, match=r"the dataset datasets\.arrow_dataset\.Dataset is empty \(0 "):
        tb.infer_spec(ds.select([]))
    with pytest.raises(tb.SpecInferenceError, match=r"is empty .*\nHint: .*a filter or select may have removed"):
        tb.to_dataset(ds.filter(lambda e: False))
    dates = datasets.Dataset.from_dict({"when": [datetime.datetime(2020, 1, 1)]})
    with pytest.raises(
        tb.SpecInferenceError, match=r"column x\['when'\]: the Arrow type timestamp\[us\] has no TensorFlow equivalent"
    ):
        tb.infer_spec(dates)
    with pytest.raises(tb.SpecInferenceError, match=r"column x\['n'\] of the dataset has type null"):
        tb.infer_spec(datasets.Dataset.from_dict({"n": [None, None]}))
    with pytest.raises(tb.TfBridgeError, match=r"the dataset's format selects no columns"):
        tb.infer_spec(ds.with_format("numpy", columns=[]))


def test_a_dataset_dict_asks_for_one_split() -> None:
    splits = datasets.DatasetDict({"train": _fixed(), "test": _fixed(4)})
    with pytest.raises(
        tb.TfBridgeError,
        match=r"a DatasetDict holds several splits \('train', 'test'\), not one dataset\.\nHint: pass one split, "
        r"e\.g\. ds\['train'\]\.",
    ):
        tb.to_dataset(splits)


def test_a_transform_that_returns_no_dict() -> None:
    ds = _fixed().with_transform(lambda batch: batch["x"])
    with pytest.raises(tb.TfBridgeError, match=r"the dataset's transform returned list .*a dict of columns"):
        tb.infer_spec(ds)


def test_importing_tfbridge_and_its_hf_module_imports_neither_datasets_nor_pyarrow() -> None:
    code = (
        "import sys, tfbridge, tfbridge.sources.hf\n"
        "print([m for m in ('datasets', 'pyarrow') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

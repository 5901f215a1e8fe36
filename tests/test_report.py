"""inspect: statistics, varying dimensions, full scans, padding figures, JSON and HTML (the `tfbridge inspect`
command is in test_cli.py)."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge import cli
from tfbridge._reservoir import Reservoir
from tfbridge.errors import TfBridgeWarning


def _load_check_script() -> Any:
    """scripts/check_report_html.py, which `make report-check` runs: its sources, screenshot and checks."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "check_report_html.py"
    spec = importlib.util.spec_from_file_location("_check_report_html", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CHECK = _load_check_script()
_BROWSER = _CHECK.find_browser()


class WiderAt9000:
    """10,000 examples of length 10, except one of length 12 at index 9,000 that a spread peek misses."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, i: int) -> Any:
        return np.full((12 if i == 9000 else 10,), i, np.float32), i % 3


def test_peek_misses_the_wider_element_and_full_scan_finds_it() -> None:
    peeked = tb.inspect(WiderAt9000(), batched=False)
    assert peeked.spec.signature[0].shape.as_list() == [10]
    assert peeked.peek_missed == []
    full = tb.inspect(WiderAt9000(), batched=False, full=True)
    assert full.spec.signature[0].shape.as_list() == [None]
    assert full.peek_missed == [{"path": "x", "dim": 0, "peek_size": 10, "element": 9000, "size": 12}]
    assert "element 9000 has 12" in str(full)
    assert full.scanned == {"full": True, "elements": 10_000}


def test_statistics_over_every_element_match_numpy() -> None:
    report = tb.inspect(WiderAt9000(), batched=False, full=True)
    values = np.concatenate([WiderAt9000()[i][0] for i in range(10_000)]).astype(np.float64)
    x = report.fields[0].stats
    assert x["min"] == 0 and x["max"] == 9999
    assert x["mean"] == pytest.approx(values.mean()) and x["std"] == pytest.approx(values.std())
    assert report.fields[1].stats["distinct"] == {"0": 3334, "1": 3333, "2": 3333}


def test_nan_inf_and_string_lengths_are_counted() -> None:
    def rows() -> Any:
        for i in range(6):
            yield {"v": np.array([np.nan if i == 2 else 1.0, np.inf if i == 4 else 2.0]), "s": "x" * (i + 1)}

    report = tb.inspect(rows, batched=False, full=True)
    by_path = {f.path: f for f in report.fields}
    assert by_path["x['v']"].stats["nan"] == 1 and by_path["x['v']"].stats["inf"] == 1
    assert by_path["x['s']"].stats["string_length"] == {"min": 1, "max": 6, "mean": 3.5}


def _lognormal_examples(n: int = 3000) -> Any:
    rng = np.random.default_rng(0)
    lengths = (rng.lognormal(np.log(60), 0.8, n)).astype(int) + 1

    def gen() -> Any:
        for n_i in lengths:
            yield np.ones(n_i, np.int32)

    return gen, lengths


def test_lengths_histogram_and_padding_of_plain_vs_bucketed_batches() -> None:
    gen, lengths = _lognormal_examples()
    report = tb.inspect(gen, batched=False, full=True, batch_size=64, buckets=16)
    info = report.fields[0].lengths
    assert info["count"] == len(lengths) and info["min"] == lengths.min() and info["max"] == lengths.max()
    assert sum(info["histogram"]["counts"]) == len(lengths)
    pad = info["padding"]
    assert pad["plain"] > 3 and pad["bucketed"] < 1.5 and len(pad["boundaries"]) == 15
    assert pad["boundaries"] == tb.bucket_boundaries(lengths, 16)


def test_report_json_has_stable_keys_and_round_trips() -> None:
    report = tb.inspect(WiderAt9000(), batched=False)
    data = json.loads(report.to_json())
    assert list(data) == ["version", "source", "kind", "batched", "scanned", "executor", "fields", "peek_missed",
                          "spec", "delivered_spec", "name"]
    keys = ["path", "kind", "dtype", "delivered_dtype", "shape", "varying", "stats", "lengths"]
    assert list(data["fields"][0]) == keys
    stats = ["count", "nan", "inf", "min", "max", "mean", "std", "distinct", "string_length", "histogram",
             "first_nan", "first_inf"]
    assert list(data["fields"][0]["stats"]) == stats
    assert json.loads(json.dumps(data)) == data
    assert tb.Spec.from_json(json.dumps(data["spec"])) == report.spec


def test_html_report_is_self_contained_with_the_histogram_embedded(tmp_path: Path) -> None:
    gen, _ = _lognormal_examples(500)
    path = tb.inspect(gen, batched=False, full=True).to_html(tmp_path / "report.html")
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "data:image/png;base64," in text
    assert "histogram of x lengths" in text and "http" not in text.split("</style>")[1]


# ---- what the report shows: plots per field, NaN/Inf call-outs, names, shapes ---------------------------------


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """A keras PyDataset: 12 batches of 16 with token ids padded per batch (longer each batch), scores holding
    one NaN (element 5, row 3, column 2) and integer labels."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(i)
        tokens = rng.integers(1, 1000, (16, 10 + 9 * i)).astype(np.int32)
        score = rng.normal(size=(16, 4)).astype(np.float32)
        if i == 5:
            score[3, 2] = np.nan
        return {"tokens": tokens, "score": score}, rng.integers(0, 3, 16)


def _figure(kind: str, path: str) -> str:
    """The opening of the HTML figure of one plot of one field."""
    return f"<figure class='plot' data-plot='{kind}' data-field='{html.escape(path)}'>"


def _figures(page: str) -> list[tuple[str, str]]:
    return [(kind, html.unescape(path)) for kind, path in re.findall(r"data-plot='(\w+)' data-field='([^']*)'", page)]


def test_batched_pydataset_report_plots_every_field(tmp_path: Path) -> None:
    report = tb.inspect(Batches(), full=True, executor="serial")
    page = report.to_html(tmp_path / "r.html").read_text()
    assert _figures(page) == [
        ("values", "x['score']"), ("values", "x['tokens']"), ("lengths", "x['tokens']"), ("classes", "y")
    ]
    for kind, path in _figures(page):
        start = page.index(_figure(kind, path))
        assert page.index("src='data:image/png;base64,", start) < page.index("</figure>", start)
    by_path = {f.path: f.stats for f in report.fields}
    hist = by_path["x['score']"]["histogram"]
    assert sum(hist["counts"]) == hist["sampled"] == hist["of"] == 12 * 16 * 4 - 1  # every finite value
    assert by_path["y"]["distinct"] == {str(k): int(v) for k, v in zip(*np.unique(
        np.concatenate([Batches()[i][1] for i in range(12)]), return_counts=True), strict=True)}  # fmt: skip


def test_report_shapes_read_as_the_spec_writes_them(tmp_path: Path) -> None:
    report = tb.inspect(Batches(), executor="serial")
    text, page = str(report), report.to_html(tmp_path / "r.html").read_text()
    for shown in (text, page):
        assert "(None, 4)" in shown and "(None, None)" in shown and "(None,)" in shown
        assert "(None)" not in shown
    assert "per example (4,)" in page


def test_report_names_the_source_as_the_user_did(tmp_path: Path) -> None:
    report = tb.inspect(Batches(), executor="serial", name="my_data.py:train")
    assert report.name == "my_data.py:train" and report.source.endswith("Batches")
    assert str(report).startswith(f"source:   my_data.py:train ({report.source}; indexed, batched)")
    page = report.to_html(tmp_path / "r.html").read_text()
    assert "<title>tfbridge report: my_data.py:train</title>" in page
    assert "<h1>tfbridge report: my_data.py:train <small>" in page
    assert tb.inspect(WiderAt9000(), batched=False).name.endswith("WiderAt9000")


_TAKEN_NAME = """
import numpy as np

class Rows:
    def __len__(self):
        return 20
    def __getitem__(self, i):
        return np.full((3,), i, np.float32)

source = Rows()
"""


def test_cli_report_names_a_privately_loaded_file_as_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "json.py").write_text(_TAKEN_NAME)  # 'json' is taken: the CLI loads it as _tfbridge_target_json
    monkeypatch.chdir(tmp_path)
    path, modules = sys.path[:], set(sys.modules)
    try:
        with pytest.warns(TfBridgeWarning, match="_tfbridge_target_json"):
            status = cli.main(["inspect", "json.py:source", "--batched", "no", "--html", "r.html"])
    finally:
        sys.path[:] = path
        for module in set(sys.modules) - modules:
            if module.startswith("_tfbridge_target_"):
                del sys.modules[module]
    out, _ = capsys.readouterr()
    assert status == 0
    page = (tmp_path / "r.html").read_text()
    assert out.startswith("source:   json.py:source (Rows; ")
    assert "<title>tfbridge report: json.py:source</title>" in page
    assert "_tfbridge_target_" not in out + page


def test_non_finite_fields_are_called_out_with_their_first_element(tmp_path: Path) -> None:
    batched = tb.inspect(Batches(), full=True, executor="serial")
    where = "the first is in element 5 at x['score'][3, 2], row 3 of the batch"
    warning = f"x['score'] holds 1 NaN value (in all 12 elements); {where}"
    assert f"WARNING: {warning}" in str(batched).splitlines()
    assert batched.fields[0].stats["first_nan"] == {"element": 5, "row": 3, "index": [3, 2]}
    page = batched.to_html(tmp_path / "b.html").read_text()
    box = page[page.index("<div class='warn' role='alert'>") : page.index("</div>")]
    assert f"<li>{html.escape(warning)}</li>" in box
    assert page.index("class='warn'") < page.index("<h2>Fields</h2>")  # above the table, not only a count in it

    def rows() -> Any:
        for i in range(6):
            yield {"v": np.array([1.0, np.inf if i == 4 else 2.0, np.nan if i >= 2 else 3.0]), "ok": float(i)}

    examples = tb.inspect(rows, batched=False, full=True)
    assert examples.warnings() == [
        "x['v'] holds 4 NaN values (in all 6 elements); the first is in element 2 at x['v'][2]",
        "x['v'] holds 1 Inf value (in all 6 elements); the first is in element 4 at x['v'][1]",
    ]
    assert "class='warn'" in examples.to_html(tmp_path / "e.html").read_text()
    assert "class='warn'" not in tb.inspect(WiderAt9000(), batched=False).to_html(tmp_path / "w.html").read_text()


def test_non_finite_values_of_ragged_and_sparse_fields_are_located() -> None:
    def nested() -> Any:
        for i in range(6):
            yield [[1.0, 2.0], [np.nan if i == 2 else 3.0]]

    assert tb.inspect(nested, batched=False, full=True).fields[0].stats["first_nan"] == {
        "element": 2, "row": None, "index": [1, 0]
    }
    rows = tf.data.Dataset.from_generator(
        lambda: ([1.0, 2.0, np.inf, 1.0] if n == 4 else [1.0] * n for n in range(1, 9)),
        output_signature=tf.TensorSpec([None], tf.float32),
    ).ragged_batch(3)
    ragged = tb.inspect(rows, full=True)
    assert ragged.fields[0].stats["first_inf"] == {"element": 1, "row": 0, "index": [0, 2]}
    assert ragged.fields[0].lengths is not None and ragged.fields[0].lengths["count"] == 8  # every row of a batch

    def matrices() -> Any:
        for i in range(4):
            yield tf.sparse.SparseTensor([[0, 1], [2, 3]], [1.0, np.nan if i == 3 else 2.0], dense_shape=[4, 5])

    assert tb.inspect(matrices, batched=False, full=True).fields[0].stats["first_nan"] == {
        "element": 3, "row": None, "index": [2, 3]
    }


class Images:
    """40 RGB images of 32x32 with a digit label, and two fields shaped almost like images."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        image = np.full((32, 32, 3), i, np.uint8)
        return {"image": image, "bands": np.zeros((32, 32, 5), np.float32), "tiny": np.zeros((4, 4, 3))}, i % 10


def test_image_fields_get_a_grid_of_images(tmp_path: Path) -> None:
    report = tb.inspect(Images(), batched=False, full=True, executor="serial")
    by_path = {f.path: f for f in report.fields}
    assert [(im.element, im.row) for im in by_path["x['image']"].images] == [(i, None) for i in range(8)]
    assert all(im.pixels.shape == (32, 32, 3) and im.pixels[0, 0, 0] == im.element
               for im in by_path["x['image']"].images)  # fmt: skip
    assert by_path["x['bands']"].images == by_path["x['tiny']"].images == []
    page = report.to_html(tmp_path / "r.html").read_text()
    assert [path for kind, path in _figures(page) if kind == "images"] == ["x['image']"]
    assert "the first 8 images seen (32x32x3)" in page

    def batches() -> Any:  # batches of 5 grey images
        for b in range(4):
            yield np.stack([np.full((28, 28, 1), 5 * b + r, np.float32) for r in range(5)])

    batches = tb.inspect(batches, batched=True, full=True)
    assert batches.fields[0].images[2].pixels.shape == (28, 28, 1) and batches.fields[0].images[2].pixels[0, 0] == 5
    assert [(im.element, im.row) for im in batches.fields[0].images] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0),
                                                                         (2, 1), (3, 0), (3, 1)]  # fmt: skip


def _padding_text(pad: dict[str, Any]) -> str:
    return (f"padding to batch max (batches of {pad['batch_size']}): {1 - 1 / pad['plain']:.0%} of values; "
            f"with {pad['buckets']} buckets: {1 - 1 / pad['bucketed']:.0%}")  # fmt: skip


def test_variable_length_fields_plot_lengths_with_the_padding_they_cost(tmp_path: Path) -> None:
    gen, _ = _lognormal_examples(2000)
    report = tb.inspect(gen, batched=False, full=True, batch_size=64, buckets=16)
    pad = report.fields[0].lengths["padding"]
    assert pad["plain"] > 2 > pad["bucketed"]
    expected = _padding_text(pad)
    assert re.fullmatch(r"padding to batch max \(batches of 64\): \d+% of values; with 16 buckets: \d+%", expected)
    assert expected in str(report)
    page = report.to_html(tmp_path / "r.html").read_text()
    assert ("lengths", "x") in _figures(page)
    start = page.index(_figure("lengths", "x"))
    assert expected in page[start : page.index("</figure>", start)]

    batched = tb.inspect(Batches(), full=True, executor="serial", batch_size=16).fields[1]
    assert batched.path == "x['tokens']"
    assert batched.lengths is not None and batched.lengths["count"] == 12 * 16  # every row of every batch
    assert (batched.lengths["min"], batched.lengths["max"]) == (10, 109)
    assert batched.lengths["padding"]["plain"] == 1.0  # batches of 16 rows of one length each


def test_string_labels_get_their_class_balance(tmp_path: Path) -> None:
    names = ["cat", "dog", "dog", "bird"]

    class Rows:
        def __len__(self) -> int:
            return 400

        def __getitem__(self, i: int) -> Any:
            return {"age": float(i % 50), "label": names[i % 4]}

    report = tb.inspect(Rows(), batched=False, full=True, label="label", executor="serial")
    assert report.fields[1].stats["distinct"] == {"bird": 100, "cat": 100, "dog": 200}
    page = report.to_html(tmp_path / "r.html").read_text()
    assert _figures(page) == [("values", "x['age']"), ("classes", "y")]
    assert "3 classes; most common &#x27;dog&#x27; (50.0%), least common &#x27;bird&#x27; (25.0%)" in page


def test_reservoir_is_a_bounded_uniform_sample_of_the_stream() -> None:
    reservoir = Reservoir(1000)
    stream = np.arange(200_000, dtype=np.float64)
    for chunk in np.array_split(stream, 3000):
        reservoir.add(chunk)
    sample = reservoir.values
    assert sample.size == 1000 and np.unique(sample).size == 1000 and reservoir.seen == stream.size
    assert np.isin(sample, stream).all()
    counts, _ = np.histogram(sample, bins=10, range=(0, 200_000))
    assert counts.min() > 60 and counts.max() < 140  # about 100 per tenth of the stream


@pytest.mark.skipif(_BROWSER is None, reason="chromium is not installed (`make report-check` installs it)")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", ["batched-nan", "images", "text", "labelled"])
def test_report_in_a_real_browser_shows_its_plots(scenario: str, tmp_path: Path) -> None:
    assert _BROWSER is not None
    assert _CHECK.check(scenario, _BROWSER, tmp_path) == []

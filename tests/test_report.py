"""inspect: statistics, varying dimensions, full scans, padding figures, JSON and HTML (the `tfbridge inspect`
command is in test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfbridge as tb


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
                          "spec", "delivered_spec"]
    keys = ["path", "kind", "dtype", "delivered_dtype", "shape", "varying", "stats", "lengths"]
    assert list(data["fields"][0]) == keys
    assert json.loads(json.dumps(data)) == data
    assert tb.Spec.from_json(json.dumps(data["spec"])) == report.spec


def test_html_report_is_self_contained_with_the_histogram_embedded(tmp_path: Path) -> None:
    gen, _ = _lognormal_examples(500)
    path = tb.inspect(gen, batched=False, full=True).to_html(tmp_path / "report.html")
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "data:image/png;base64," in text
    assert "histogram of x lengths" in text and "http" not in text.split("</style>")[1]

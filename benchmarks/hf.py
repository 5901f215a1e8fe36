"""HuggingFace datasets for `make bench`: `Dataset.to_tf_dataset` beside `tb.to_dataset`, in one run.

Two workloads, built in memory with `datasets.Dataset.from_dict` (no hub):

- fixed features: 50,000 rows x 32 float32 columns + an int64 label. `ds.to_tf_dataset(columns=..., label_cols=
  "label", batch_size=32, shuffle=False)` against `tb.to_dataset(ds, label="label", batch_size=32)`;
- token lists: 20,000 rows of int32 token ids, lengths uniform in 5..200, + an int64 label. `to_tf_dataset` with a
  padding collate (pad each batch to its longest with 0: what transformers' `DataCollatorWithPadding(...,
  return_tensors="np")` does; datasets' own default collate only stacks, which fails on lists of different
  lengths) against `tb.pad_batch(tb.to_dataset(ds, label="label"), 32)`.

Each also with tfbridge's block route (the dataset taken as bigger than the memory budget), for reference.

Every method: several repetitions, each a fresh pipeline; one whole epoch of warm-up (tracing, first reads), then
whole epochs timed, each pulled by a compiled TensorFlow loop as training pulls them (no Python per batch on the
consumer side; see src/tfbridge/_bench.py). Figures: batches per second, median [min .. max]; "build" is the
time to make the dataset. `python benchmarks/hf.py` runs this section alone and writes it into RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent

import numpy as np  # noqa: E402

import tfbridge as tb  # noqa: E402
from tfbridge._bench import Measurement  # noqa: E402

BATCH = 32
TITLE = "## HuggingFace datasets: `to_tf_dataset` vs `tb.to_dataset`"
TARGET = 1.5


def fixed_dataset(rows: int, features: int, seed: int = 0) -> Any:
    import datasets

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {f"f{i:02d}": rng.standard_normal(rows).astype(np.float32) for i in range(features)}
    columns["label"] = rng.integers(0, 2, rows).astype(np.int64)
    return datasets.Dataset.from_dict(columns)


def token_dataset(rows: int, low: int = 5, high: int = 200, seed: int = 0) -> Any:
    import datasets

    rng = np.random.default_rng(seed)
    lengths = rng.integers(low, high + 1, rows)
    ids = [rng.integers(1, 30_000, n).astype(np.int32) for n in lengths]
    features = datasets.Features(
        {"input_ids": datasets.List(datasets.Value("int32")), "label": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict({"input_ids": ids, "label": rng.integers(0, 2, rows)}, features=features)


def pad_collate(examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Pad every list field to the batch's longest with 0 and stack the rest (DataCollatorWithPadding, numpy)."""
    batch: dict[str, np.ndarray] = {}
    for key in examples[0]:
        values = [np.asarray(e[key]) for e in examples]
        if values[0].ndim == 0:
            batch[key] = np.stack(values)
            continue
        out = np.zeros((len(values), max(len(v) for v in values)), dtype=values[0].dtype)
        for row, v in zip(out, values, strict=True):
            row[: len(v)] = v
        batch[key] = out
    return batch


def _block_route(make: Any) -> Any:
    """``make()`` with tfbridge's block route (the memory budget set to 0 while the dataset is made)."""
    from tfbridge.sources import hf

    budget = hf.memory_budget
    hf.memory_budget = lambda: 0
    try:
        return make()
    finally:
        hf.memory_budget = budget


def methods(fixed: Any, tokens: Any) -> list[tuple[str, str, Any]]:
    """(workload, method, factory); the first method of a workload is the baseline."""
    columns = [c for c in fixed.column_names if c != "label"]

    def tb_fixed() -> Any:
        return tb.to_dataset(fixed, label="label", batch_size=BATCH)

    def tb_tokens() -> Any:
        return tb.pad_batch(tb.to_dataset(tokens, label="label"), BATCH)

    return [
        ("fixed", "HF to_tf_dataset", lambda: fixed.to_tf_dataset(
            columns=columns, label_cols="label", batch_size=BATCH, shuffle=False)),
        ("fixed", 'tb.to_dataset(ds, label="label", batch_size=32)', tb_fixed),
        ("fixed", "same, block route (beyond the memory budget)", lambda: _block_route(tb_fixed)),
        ("tokens", "HF to_tf_dataset + padding collate", lambda: tokens.to_tf_dataset(
            columns=["input_ids"], label_cols="label", batch_size=BATCH, shuffle=False, collate_fn=pad_collate)),
        ("tokens", 'tb.pad_batch(tb.to_dataset(ds, label="label"), 32)', tb_tokens),
        ("tokens", "same, block route (beyond the memory budget)", lambda: _block_route(tb_tokens)),
    ]  # fmt: skip


def _epoch_puller(dataset: Any) -> Any:
    """One whole epoch of ``dataset`` per call, pulled by a compiled TensorFlow loop; returns the batches."""
    import tensorflow as tf

    def epoch() -> Any:
        count = tf.constant(0, tf.int64)
        for _ in dataset:
            count += 1
        return count

    return tf.function(epoch)


def measure(make: Any, repeats: int, epochs: int) -> tuple[Measurement, list[float], int]:
    """Batches per second over ``epochs`` whole epochs after one of warm-up, ``repeats`` fresh pipelines; the
    seconds each build took; the batches per epoch."""
    m, builds, batches = Measurement("x"), [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        dataset = make()
        builds.append(time.perf_counter() - start)
        pull = _epoch_puller(dataset)
        batches = int(pull())  # warm-up: tracing, first reads
        start = time.perf_counter()
        for _ in range(epochs):
            got = int(pull())
            assert got == batches, f"an epoch gave {got} batches, the first {batches}"
        m.rates.append(epochs * batches / (time.perf_counter() - start))
    return m, builds, batches


def run(repeats: int, epochs: int, rows: int, features: int, token_rows: int) -> list[tuple[str, str, Any, Any, int]]:
    fixed, tokens = fixed_dataset(rows, features), token_dataset(token_rows)
    out = []
    for workload, name, make in methods(fixed, tokens):
        m, builds, batches = measure(make, repeats, epochs)
        low, high = m.spread
        print(f"  {workload:6s} {name:52s} build {statistics.median(builds):6.2f} s  {m.median:9.1f} batches/s "
              f"[{low:.1f} .. {high:.1f}]", flush=True)  # fmt: skip
        out.append((workload, name, m, builds, batches))
    return out


def section(
    repeats: int = 3, epochs: int = 2, rows: int = 50_000, features: int = 32, token_rows: int = 20_000
) -> str:
    started = time.perf_counter()
    print(f"\n{TITLE[3:]}", flush=True)
    results = run(repeats, epochs, rows, features, token_rows)
    seconds = time.perf_counter() - started
    baseline = {w: m.median for w, name, m, _, _ in results if name.startswith("HF ")}
    ratio = {w: m.median / baseline[w] for w, name, m, _, _ in results if name.startswith("tb.")}
    import datasets

    lines = [
        TITLE,
        "",
        f"Written by benchmarks/hf.py on {dt.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, datasets {datasets.__version__}, tfbridge {tb.__version__}. "
        f"{repeats} repetitions per method, each a fresh pipeline: one whole epoch of warm-up, then {epochs} whole "
        "epochs timed, pulled by a compiled TensorFlow loop (as training pulls them). Figures are batches of 32 per "
        f"second: median [min .. max]; build is the time to make the dataset (median). Section run: "
        f"{seconds / 60:.1f} min. Command: `python benchmarks/hf.py --repeats {repeats} --epochs {epochs} "
        f"--rows {rows} --features {features} --token-rows {token_rows}`.",
        "",
        f"Fixed features: {rows:,} rows x {features} float32 columns + int64 label. Token lists: {token_rows:,} rows "
        "of int32 ids, lengths uniform in 5..200, + int64 label; `to_tf_dataset` pads each batch to its longest with "
        "a padding collate (datasets' default collate only stacks). The block route is tfbridge reading the same "
        "dataset as if it exceeded the memory budget: read in blocks, it pads through tf.data's `padded_batch` (a "
        "function call per variable-length example). In memory, `tb.pad_batch` of what `tb.to_dataset` made "
        "builds it again so that each batch of 32 is gathered and padded at once, where the columns are.",
        "",
        "| target | ratio | needed | met |",
        "|---|---:|---:|:---:|",
        f"| fixed features: `tb.to_dataset` vs `to_tf_dataset` | {ratio['fixed']:.2f}x | {TARGET:g}x | "
        f"{'yes' if ratio['fixed'] >= TARGET else 'NO'} |",
        f"| token lists: `tb.pad_batch(tb.to_dataset(...))` vs `to_tf_dataset` + padding | {ratio['tokens']:.2f}x | "
        f"{TARGET:g}x | {'yes' if ratio['tokens'] >= TARGET else 'NO'} |",
        "",
        "| workload | method | build (s) | batches/s | spread | examples/s | vs to_tf_dataset |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for workload, name, m, builds, batches in results:
        low, high = m.spread
        size = rows if workload == "fixed" else token_rows
        examples = m.median * size / max(batches, 1)
        lines.append(
            f"| {workload} | {name} | {statistics.median(builds):.2f} | {m.median:.1f} | {low:.1f} .. {high:.1f} | "
            f"{examples:,.0f} | {m.median / baseline[workload]:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = HERE / "RESULTS.md", title: str = TITLE) -> None:
    """Replace the section ``title`` of RESULTS.md (from its title to the next ``## `` title), or append it."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(title) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old, count=1) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="whole epochs timed per repetition")
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the fixed-features dataset")
    parser.add_argument("--features", type=int, default=32, help="float columns of the fixed-features dataset")
    parser.add_argument("--token-rows", type=int, default=20_000, help="rows of the token-lists dataset")
    args = parser.parse_args()
    text = section(args.repeats, args.epochs, args.rows, args.features, args.token_rows)
    write_section(text)
    print("\n" + text)


if __name__ == "__main__":
    sys.exit(main())

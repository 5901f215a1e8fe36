"""torch, grain and DataFrame sources for `make bench`: each library's own way of feeding TensorFlow beside
`tb.to_dataset`, same data, in one run.

Kinds of source, each with the route a user of that library writes today (the baseline) and tfbridge:

- torch map-style Dataset: a user subclass returning ``(float32[16] tensor, int64 label tensor)`` examples,
  20,000 of them. Baseline: ``tf.data.Dataset.from_generator`` over ``DataLoader(ds, batch_size=32)``, each
  collated batch turned into numpy with ``.numpy()``; tfbridge: ``tb.to_dataset(ds, batch_size=32)``;
- torch DataLoader: that same ``DataLoader(ds, batch_size=32)`` given as it is. Baseline: the same
  ``from_generator`` over it; tfbridge: ``tb.to_dataset(loader)``;
- grain MapDataset: ``grain.MapDataset.source(list_of_examples).map(f).batch(32)`` (f a light numpy transform).
  Baseline: ``from_generator(lambda: iter(grain_ds), output_signature=...)``; tfbridge: ``tb.to_dataset(grain_ds)``;
- polars DataFrame, pyarrow Table, pandas DataFrame: 50,000 rows x 16 float32 columns + an int64 label "y".
  Baseline: ``from_tensor_slices(({name: column as numpy}, y)).batch(32)``, what users write by hand;
  tfbridge: ``tb.to_dataset(df, label="y", batch_size=32)``.

The ``from_generator`` baselines end in ``prefetch(AUTOTUNE)`` (the usual idiom, and the baseline's best case);
the hand-written ``from_tensor_slices`` one is exactly ``.batch(32)``. Before timing, the first batch of every
method of a kind is checked to hold the same values as the baseline's, and every epoch the same number of batches.

Every method: several repetitions, each a fresh pipeline; one whole epoch of warm-up (tracing, first reads), then
whole epochs timed, each pulled by a compiled TensorFlow loop as training pulls them (as benchmarks/hf.py; see
src/tfbridge/_bench.py). Figures: batches of 32 per second, median [min .. max]; "build" is the time to make the
dataset, including turning the columns into numpy for the hand-written route. `python benchmarks/sources.py`
runs this section alone and writes it into RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from hf import measure, write_section  # noqa: E402  (same measurement: warm-up epoch, whole epochs by a compiled loop)

import tfbridge as tb  # noqa: E402

BATCH = 32
TITLE = "## torch, grain and DataFrames: each library's route to TensorFlow vs `tb.to_dataset`"


# -- data ------------------------------------------------------------------------------------------------------


def torch_dataset(rows: int, features: int = 16, seed: int = 0) -> Any:
    """A user's map-style torch Dataset: one (float32[features], int64 label) pair of tensors per index."""
    import torch

    class Examples(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            generator = torch.Generator().manual_seed(seed)
            self.x = torch.randn(rows, features, generator=generator)
            self.y = torch.randint(0, 2, (rows,), generator=generator)

        def __len__(self) -> int:
            return rows

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            return self.x[i], self.y[i]

    return Examples()


def halve(example: tuple[np.ndarray, np.int64]) -> tuple[np.ndarray, np.int64]:
    """The grain pipeline's map: a light numpy transform of one example (module level: picklable)."""
    x, y = example
    return x * np.float32(0.5), y


def grain_dataset(rows: int, features: int = 16, seed: int = 0) -> Any:
    import grain  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    y = rng.integers(0, 2, rows).astype(np.int64)
    return grain.MapDataset.source([(x[i], y[i]) for i in range(rows)]).map(halve).batch(BATCH)


def columns(rows: int, features: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f"f{i:02d}": rng.standard_normal(rows).astype(np.float32) for i in range(features)}
    out["y"] = rng.integers(0, 2, rows).astype(np.int64)
    return out


# -- routes ----------------------------------------------------------------------------------------------------


def _batch_signature(features: int) -> Any:
    import tensorflow as tf

    return (tf.TensorSpec((None, features), tf.float32), tf.TensorSpec((None,), tf.int64))


def from_loader(loader: Any, features: int) -> Any:
    """The usual torch route: a generator over the DataLoader, each collated batch as numpy."""
    import tensorflow as tf

    def batches() -> Any:
        for xb, yb in loader:
            yield xb.numpy(), yb.numpy()

    signature = _batch_signature(features)
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def from_grain(dataset: Any, features: int) -> Any:
    """grain's route to TensorFlow: a generator over a new iterator of the (batched) MapDataset."""
    import tensorflow as tf

    signature = _batch_signature(features)
    return tf.data.Dataset.from_generator(lambda: iter(dataset), output_signature=signature).prefetch(tf.data.AUTOTUNE)


def _numpy_column(frame: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        return np.asarray(frame.column(name).to_numpy())
    return np.asarray(frame[name].to_numpy())  # polars Series and pandas Series alike


def by_hand(frame: Any) -> Any:
    """What users write for a DataFrame or Table: numpy columns into from_tensor_slices, then batch."""
    import pyarrow as pa
    import tensorflow as tf

    names = [n for n in (frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)) if n != "y"]
    x = {n: _numpy_column(frame, n) for n in names}
    return tf.data.Dataset.from_tensor_slices((x, _numpy_column(frame, "y"))).batch(BATCH)


def methods(torch_rows: int, grain_rows: int, rows: int, features: int) -> list[tuple[str, str, Any, Any]]:
    """(kind, method, factory, source); the first method of a kind is the baseline, the second tfbridge."""
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import torch

    examples = torch_dataset(torch_rows, features)
    loader = torch.utils.data.DataLoader(examples, batch_size=BATCH)
    grain_ds = grain_dataset(grain_rows, features)
    data = columns(rows, features)
    polars_df, arrow_table, pandas_df = pl.DataFrame(data), pa.table(data), pd.DataFrame(data)
    out: list[tuple[str, str, Any, Any]] = [
        ("torch Dataset", "from_generator over DataLoader(ds, batch_size=32), .numpy()",
         lambda: from_loader(torch.utils.data.DataLoader(examples, batch_size=BATCH), features), examples),
        ("torch Dataset", "tb.to_dataset(ds, batch_size=32)", lambda: tb.to_dataset(examples, batch_size=BATCH),
         examples),
        ("torch DataLoader", "from_generator over the DataLoader, .numpy()", lambda: from_loader(loader, features),
         loader),
        ("torch DataLoader", "tb.to_dataset(loader)", lambda: tb.to_dataset(loader), loader),
        ("grain MapDataset", "from_generator(lambda: iter(grain_ds))", lambda: from_grain(grain_ds, features),
         grain_ds),
        ("grain MapDataset", "tb.to_dataset(grain_ds)", lambda: tb.to_dataset(grain_ds), grain_ds),
    ]  # fmt: skip
    for kind, frame in (
        ("polars DataFrame", polars_df),
        ("pyarrow Table", arrow_table),
        ("pandas DataFrame", pandas_df),
    ):
        out += [
            (kind, "from_tensor_slices((dict of numpy columns, y)).batch(32)", lambda f=frame: by_hand(f), frame),
            (kind, 'tb.to_dataset(df, label="y", batch_size=32)',
             lambda f=frame: tb.to_dataset(f, label="y", batch_size=BATCH), frame),
        ]  # fmt: skip
    return out


# -- run -------------------------------------------------------------------------------------------------------


def _first_batch(dataset: Any) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(t) for t in tf.nest.flatten(next(iter(dataset)))]


def check_same(kind: str, baseline: Any, other: Any) -> None:
    """The first batch of ``other`` holds the baseline's values (same structure, order and numbers)."""
    want, got = _first_batch(baseline()), _first_batch(other())
    assert len(want) == len(got), f"{kind}: {len(got)} fields, the baseline {len(want)}"
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape and np.allclose(a, b), f"{kind}: the first batch differs from the baseline's"


def auto_choice(source: Any) -> str:
    choice = tb.inspect(source).executor
    return f"{choice['name']}" + (f" x{choice['workers']}" if choice["workers"] else "")


def _warm_tensorflow() -> None:
    """TensorFlow's one-time start (runtime, from_generator's machinery) outside the first method's build time."""
    import tensorflow as tf

    for dataset in (tf.data.Dataset.range(2), tf.data.Dataset.from_generator(lambda: iter([1, 2]), tf.int64)):
        list(dataset.batch(2))


def run(repeats: int, epochs: int, torch_rows: int, grain_rows: int, rows: int, features: int) -> list[Any]:
    _warm_tensorflow()
    out: list[Any] = []
    baselines: dict[str, Any] = {}
    for kind, name, make, source in methods(torch_rows, grain_rows, rows, features):
        if kind in baselines:
            check_same(kind, baselines[kind], make)
        else:
            baselines[kind] = make
        m, builds, batches = measure(make, repeats, epochs)
        low, high = m.spread
        print(f"  {kind:17s} {name:58s} build {statistics.median(builds):6.3f} s  {m.median:9.1f} batches/s "
              f"[{low:.1f} .. {high:.1f}]  ({batches} batches)", flush=True)  # fmt: skip
        chosen = auto_choice(source) if name.startswith("tb.") else ""
        out.append((kind, name, m, builds, batches, chosen))
    for kind in baselines:
        counts = {b for k, _, _, _, b, _ in out if k == kind}
        assert len(counts) == 1, f"{kind}: methods gave different batches per epoch: {sorted(counts)}"
    return out


def _versions() -> str:
    import grain
    import keras
    import pandas
    import polars
    import pyarrow
    import tensorflow as tf
    import torch

    try:
        from importlib.metadata import version

        grain_version = version("grain")
    except Exception:  # grain's distribution may be named otherwise
        grain_version = getattr(grain, "__version__", "?")
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, torch {torch.__version__}, grain {grain_version}, "
        f"polars {polars.__version__}, pyarrow {pyarrow.__version__}, pandas {pandas.__version__}"
    )


def section(
    repeats: int = 3, epochs: int = 2, torch_rows: int = 20_000, grain_rows: int = 20_000, rows: int = 50_000,
    features: int = 16,
) -> str:  # fmt: skip
    started = time.perf_counter()
    print(f"\n{TITLE[3:]}", flush=True)
    results = run(repeats, epochs, torch_rows, grain_rows, rows, features)
    seconds = time.perf_counter() - started
    baseline: dict[str, float] = {}
    for kind, _, m, _, _, _ in results:
        baseline.setdefault(kind, m.median)
    chosen = {kind: c for kind, _, _, _, _, c in results if c}
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/sources.py on {dt.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, {_versions()}, tfbridge {tb.__version__}. {repeats} repetitions "
        f"per method, each a fresh pipeline: one whole epoch of warm-up, then {epochs} whole epochs timed, pulled by "
        "a compiled TensorFlow loop (as training pulls them). Figures are batches of 32 per second: median "
        "[min .. max]; build is the time to make the dataset (median). Ratio: this method / the kind's library "
        f"route (its first row). Section run: {seconds / 60:.1f} min. Command: `python benchmarks/sources.py "
        f"--repeats {repeats} --epochs {epochs} --torch-rows {torch_rows} --grain-rows {grain_rows} --rows {rows} "
        f"--features {features}`.",
        "",
        f"torch Dataset: a user subclass of `torch.utils.data.Dataset`, {torch_rows:,} examples of "
        f"(float32[{features}] tensor, int64 label tensor); the usual route is `tf.data.Dataset.from_generator` over "
        "`DataLoader(ds, batch_size=32)` yielding `xb.numpy(), yb.numpy()` (+ `prefetch`), against "
        "`tb.to_dataset(ds, batch_size=32)`, which calls the dataset per index and batches in tf.data. torch "
        "DataLoader: that same loader handed over as it is, the same `from_generator` against `tb.to_dataset(loader)`"
        f" (a stream of the loader's batches). grain MapDataset: `MapDataset.source(list).map(f).batch(32)` over "
        f"{grain_rows:,} (float32[{features}], int64) examples, f a light numpy transform; grain's route is "
        "`from_generator(lambda: iter(grain_ds), ...)` (+ `prefetch`), against `tb.to_dataset(grain_ds)` (the "
        f"batched MapDataset read by index, one batch per call). polars, pyarrow, pandas: {rows:,} rows x {features} "
        "float32 columns + an int64 label `y`; by hand, every column to numpy, `from_tensor_slices((dict, y))"
        '.batch(32)`, against `tb.to_dataset(df, label="y", batch_size=32)`. Within a kind every method gives the '
        "same batches (first batch compared, batches per epoch equal). tfbridge's automatic executor chose: "
        + "; ".join(f"{kind}: {c}" for kind, c in chosen.items())
        + ".",
        "",
        "Where the time goes: `tb.to_dataset(ds, batch_size=32)` reads a map-style torch Dataset as examples, so "
        "every example is called, turned from torch into numpy and checked in Python (chunks of examples then "
        "cross into tf.data, which batches them); the DataLoader route collates 32 examples with one `torch.stack` "
        "per field and crosses once per batch. With cheap examples like these the per-example Python is most of "
        "an epoch (a profile outside this run: about 30 us per example for tfbridge against about 3 us in the "
        "loader), so handing tfbridge the DataLoader is the faster way for such a Dataset. For the DataFrames, "
        "tfbridge gathers each batch of 32 rows at once per column inside tf.data, where `from_tensor_slices` "
        "slices every column once per row and `batch` stacks them again.",
        "",
        "| kind | method | build (s) | batches/s | spread | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, name, m, builds, _, _ in results:
        low, high = m.spread
        lines.append(
            f"| {kind} | {name} | {statistics.median(builds):.3f} | {m.median:.1f} | {low:.1f} .. {high:.1f} | "
            f"{m.median / baseline[kind]:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="whole epochs timed per repetition")
    parser.add_argument("--torch-rows", type=int, default=20_000, help="examples of the torch Dataset")
    parser.add_argument("--grain-rows", type=int, default=20_000, help="examples of the grain MapDataset")
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the DataFrames and Table")
    parser.add_argument("--features", type=int, default=16, help="float columns / vector length")
    args = parser.parse_args()
    text = section(args.repeats, args.epochs, args.torch_rows, args.grain_rows, args.rows, args.features)
    write_section(text, title=TITLE)
    print("\n" + text)


if __name__ == "__main__":
    main()

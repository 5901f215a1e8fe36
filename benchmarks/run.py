"""`make bench`: tfbridge beside the usual ways of feeding Python sources to tf.data, in one run.

For each workload (benchmarks/workloads.py): tfbridge (auto and each executor), plain `from_generator`,
Keras's own PyDataset conversion (threads, processes), an index-parallel `tf.numpy_function` map, and the
ceilings (a plain Python loop over the source, an in-memory tf.data pipeline, numpy memcpy). Every figure is
elements/s: median of several repetitions with min-max spread, warm-up excluded. Then the sections of
benchmarks/variable.py, scaling.py, service.py, hf.py, sources.py and real.py (real workloads: JPEG images and
tokenised text, with time to the first batch and peak memory), workers.py (process workers' start-up and
memory), auto.py, epoch_end.py and resume.py (the index-driven route against from_generator, checkpoint sizes
and restore times). Writes benchmarks/RESULTS.md and
benchmarks/throughput.png.

``--quick`` (or ``BENCH_QUICK=1``, e.g. ``BENCH_QUICK=1 make bench``) runs every section small (one repetition,
short windows, small data) and only prints; ``--only real,hf`` runs those sections alone (and only prints).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import auto  # noqa: E402
import epoch_end  # noqa: E402
import hf  # noqa: E402
import numpy as np  # noqa: E402
import real  # noqa: E402
import resume  # noqa: E402
import scaling  # noqa: E402
import service  # noqa: E402
import sources  # noqa: E402
import variable  # noqa: E402
import workers  # noqa: E402
import workloads  # noqa: E402

import tfbridge as tb  # noqa: E402
from tfbridge._bench import Measurement, measure, plain_from_generator  # noqa: E402


def _signature(source: Any) -> Any:
    return tb.infer_spec(source, peek=1).signature


def _numpy_function_map(source: Any, signature: Any) -> Any:
    import tensorflow as tf

    flat = tf.nest.flatten(signature)

    def fetch(i: Any) -> Any:
        return tf.nest.flatten(source[int(i)])

    def load(i: Any) -> Any:
        out = tf.numpy_function(fetch, [i], [s.dtype for s in flat])
        out = [tf.ensure_shape(t, s.shape) for t, s in zip(out, flat, strict=True)]
        return tf.nest.pack_sequence_as(signature, out)

    return tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _keras(source: Any, workers: int, processes: bool) -> Any:
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    wrapped = workloads.as_keras(source, workers=workers, use_multiprocessing=processes, max_queue_size=2 * workers)
    return PyDatasetAdapter(wrapped, shuffle=False).get_tf_dataset()


def _python_loop(source: Any) -> Any:
    return (source[i] for i in range(len(source)))


def _in_memory(source: Any) -> Any:
    import tensorflow as tf

    batches = [source[i] for i in range(4)]
    stacked = tf.nest.map_structure(lambda *xs: np.stack(xs), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(tf.data.AUTOTUNE)


def _memcpy(source: Any) -> Any:
    x, _ = source[0]
    out = np.empty_like(x)

    def copies() -> Any:
        while True:
            np.copyto(out, x)
            yield out

    return copies()


def methods(source: Any, cores: int) -> list[tuple[str, Any, str]]:
    """(name, factory, group) for one workload; group is tfbridge | usual | ceiling."""
    sig = _signature(source)
    return [
        ("tfbridge auto (no arguments)", lambda: tb.to_dataset(source), "tfbridge"),
        ("tfbridge serial", lambda: tb.to_dataset(source, executor="serial"), "tfbridge"),
        ("tfbridge thread x64", lambda: tb.to_dataset(source, executor="thread", workers=64), "tfbridge"),
        (f"tfbridge process x{cores}", lambda: tb.to_dataset(source, executor="process", workers=cores), "tfbridge"),
        ("plain from_generator", lambda: plain_from_generator(source, sig), "usual"),
        ("Keras PyDataset, 16 threads", lambda: _keras(source, 16, False), "usual"),
        (f"Keras PyDataset, {cores} processes", lambda: _keras(source, cores, True), "usual"),
        ("numpy_function map (AUTOTUNE)", lambda: _numpy_function_map(source, sig), "usual"),
        ("ceiling: Python loop over source", lambda: _python_loop(source), "ceiling"),
        ("ceiling: in-memory tf.data", lambda: _in_memory(source), "ceiling"),
        ("ceiling: numpy memcpy of a batch", lambda: _memcpy(source), "ceiling"),
    ]


def run(repeats: int, window_s: float) -> tuple[list[tuple[Any, list[Measurement], str]], float]:
    from tfbridge import executors

    cores = executors.cores()
    results = []
    started = time.perf_counter()
    for workload in workloads.WORKLOADS:
        source = workload()
        choice = tb.inspect(source).executor
        auto = f"{choice['name']} x{choice['workers']} - {choice['reason']}"
        print(f"\n{workload.title}\n  auto picks: {auto}", flush=True)
        rows = []
        for name, make, group in methods(source, cores):
            m = measure(name, make, repeats=repeats, warmup=8, window_s=window_s, min_elements=24)
            m.group = group  # type: ignore[attr-defined]
            rows.append(m)
            gc.collect()
            low, high = m.spread
            error = f"  {m.error}" if m.error else ""
            print(f"  {name:38s} {m.median:10.1f}/s  [{low:.1f} .. {high:.1f}]{error}", flush=True)
        results.append((workload, rows, f"{choice['name']} x{choice['workers']}: {choice['reason']}"))
        del source, rows
        _release_memory()
    return results, time.perf_counter() - started


def _release_memory() -> None:
    """Collect what the workload left and hand freed heap memory back to the system (glibc keeps it per thread
    arena otherwise), so one workload's big batches do not crowd out the next section's processes."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        rss = next((line.split()[1] for line in f if line.startswith("VmRSS")), "?")
    print(f"  (this process now holds {int(rss) // 1024 if rss != '?' else rss} MB)", flush=True)


def _by(rows: list[Measurement], prefix: str) -> Measurement:
    return next(m for m in rows if m.name.startswith(prefix))


TARGETS = [
    # (workload index, description, numerator prefix, denominator prefix, threshold)
    (0, "CPU-bound: process executor vs plain Python loop", "tfbridge process", "ceiling: Python loop", 1.9),
    (0, "CPU-bound: process executor vs Keras processes", "tfbridge process", "Keras PyDataset, 2 processes", 1.2),
    (1, "Latency-bound: default settings vs plain from_generator", "tfbridge auto", "plain from_generator", 50.0),
    (2, "Big batches: process executor vs plain from_generator", "tfbridge process", "plain from_generator", 0.75),
    (3, "Big + CPU-bound: default settings vs plain from_generator", "tfbridge auto", "plain from_generator", 1.7),
    (3, "Big + CPU-bound: process executor vs plain from_generator", "tfbridge process", "plain from_generator", 1.7),
]


def write(results: list[Any], seconds: float, repeats: int, window_s: float, extra: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (benchmarks/run.py) on {dt.date.today().isoformat()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"tfbridge {tb.__version__}. {repeats} repetitions per method, each a fresh pipeline, 8 elements of "
        f"warm-up excluded, then a timed window of at least {window_s:.0f} s and 24 elements. Figures are "
        "elements (batches) per second: median [min .. max]. Compare ratios within this one run; absolute "
        f"times drift on shared machines. Whole run: {seconds / 60:.1f} min.",
        "",
        "## Targets",
        "",
        "| target | ratio | needed | met |",
        "|---|---:|---:|:---:|",
    ]
    for w, desc, num, den, need in TARGETS:
        rows = results[w][1]
        ratio = _by(rows, num).median / _by(rows, den).median
        lines.append(f"| {desc} | {ratio:.2f}x | {need:g}x | {'yes' if ratio >= need else 'NO'} |")
    lines += ["", "Default settings (`executor=\"auto\"`) against the best tfbridge executor on each workload:", ""]
    lines += ["| workload | auto | best executor | auto / best |", "|---|---:|---:|---:|"]
    for workload, rows, _ in results:
        tbs = [m for m in rows if m.name.startswith("tfbridge") and not m.name.startswith("tfbridge auto")]
        best = max(tbs, key=lambda m: m.median)
        auto = _by(rows, "tfbridge auto")
        lines.append(
            f"| {workload.title.split(':')[0]} | {auto.median:.1f}/s | {best.name}: {best.median:.1f}/s | "
            f"{auto.median / best.median:.2f} |"
        )
    for workload, rows, choice in results:
        lines += ["", f"## {workload.title}", "", f"`auto` chose {choice}", ""]
        lines += ["| method | elements/s | spread | vs plain from_generator |", "|---|---:|---:|---:|"]
        plain = _by(rows, "plain from_generator").median
        for m in rows:
            if m.error:
                lines.append(f"| {m.name} | failed | {m.error} | |")
                continue
            low, high = m.spread
            lines.append(f"| {m.name} | {m.median:.1f} | {low:.1f} .. {high:.1f} | {m.median / plain:.2f}x |")
    text = "\n".join(lines) + "\n\n" + extra
    (HERE / "RESULTS.md").write_text(text)
    return text


def chart(results: list[Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'tfbridge[report]')")
        return None
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)))
    colors = {"tfbridge": "#1f77b4", "usual": "#ff7f0e", "ceiling": "#999999"}
    for ax, (workload, rows, _) in zip(axes, results, strict=True):
        ok = [m for m in rows if not m.error]
        ax.barh([m.name for m in ok], [m.median for m in ok], color=[colors[m.group] for m in ok])  # type: ignore[attr-defined]
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(workload.title, fontsize=10)
        ax.set_xlabel("elements / s (log scale)")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path = HERE / "throughput.png"
    fig.savefig(path, dpi=90)
    return path


SECTIONS = (
    "workloads", "variable", "scaling", "service", "hf", "sources", "real", "workers", "auto", "epoch_end", "resume"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per method (default 3; quick: 1)")
    parser.add_argument("--window", type=float, default=None, help="seconds per timed window (default 3; quick: 0.5)")
    parser.add_argument("--quick", action="store_true", help="every section small; prints, writes nothing")
    parser.add_argument("--only", help=f"comma-separated sections to run, of: {', '.join(SECTIONS)} (prints only)")
    args = parser.parse_args()
    quick = args.quick or real.quick_mode()
    repeats = args.repeats or (1 if quick else 3)
    window = args.window or (0.5 if quick else 3.0)
    only = tuple(x.strip() for x in args.only.split(",")) if args.only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}; the sections: {', '.join(SECTIONS)}")
    started = time.perf_counter()
    results: list[Any] = []
    if "workloads" in only:
        results, _ = run(repeats, window)
    parts = []
    if "variable" in only:
        parts.append(variable.section())
    if "scaling" in only:
        parts.append(scaling.section(repeats, window))
    if "service" in only:
        parts.append("## tf.data service: 1 and 2 local workers\n\n" + service.section())
    if "hf" in only:
        parts.append(hf.section(repeats, 1, 5_000, 8, 2_000) if quick else hf.section(repeats))
    if "sources" in only:
        parts.append(sources.section(repeats, 1, 2_000, 2_000, 5_000) if quick else sources.section(repeats))
    if "real" in only:
        parts.append(real.section(quick=quick))
    if "workers" in only:
        parts.append(workers.section(64 if quick else 400))
    if "auto" in only:
        parts.append(auto.section(repeats))
    if "epoch_end" in only:
        parts.append(epoch_end.section(epochs=3) if quick else epoch_end.section())
    if "resume" in only:
        parts.append(resume.section(repeats, quick=quick))
    extra = "\n".join(parts)
    seconds = time.perf_counter() - started
    if quick or only != SECTIONS:
        print(f"\n(quick run or a part of the sections: RESULTS.md is left as it is; {seconds / 60:.1f} min)\n")
        print(extra)
        return
    print("\n" + write(results, seconds, repeats, window, extra))
    path = chart(results)
    if path:
        print(f"chart: {path}")


if __name__ == "__main__":
    main()

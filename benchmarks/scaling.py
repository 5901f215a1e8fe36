"""Beyond one process: materialize and the Ray executor (the issue-6 targets), for `make bench`.

- materialize: a finite CPU-bound source (W1's __getitem__: ~20 ms of pure Python per float32[32,128] batch,
  300 batches) written once with `tb.materialize` (process executor); the first epoch is that run, from call
  to return (source, save, assemble); later epochs read the saved data with TensorFlow alone.
- Ray: W1 through `executor="ray"` on a local Ray started with 1 and then 2 CPUs (Ray's own task overhead
  included), beside plain `from_generator` over the same source.
Elements/s; medians of the given repetitions, compared within this one run.

    .venv/bin/python benchmarks/scaling.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads

import tfbridge as tb
from tfbridge._bench import Measurement, measure, plain_from_generator

FINITE = 300


class FiniteCpuBound(workloads.CpuBound):
    def __len__(self) -> int:
        return FINITE


def _epoch_rate(ds: Any) -> float:
    import tensorflow as tf

    @tf.function
    def drain() -> Any:
        return ds.reduce(np.int64(0), lambda n, _: n + 1)

    drain()  # trace once
    start = time.perf_counter()
    n = int(drain())
    return n / (time.perf_counter() - start)


def materialize_figures(repeats: int) -> dict[str, float]:
    first, later = [], []
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="tfbridge-bench-"))
        try:
            start = time.perf_counter()
            ds = tb.materialize(FiniteCpuBound(), root / "w1", executor="process", verbose=False)
            first.append(FINITE / (time.perf_counter() - start))
            later.append(statistics.median(_epoch_rate(ds) for _ in range(3)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return {"first": statistics.median(first), "later": statistics.median(later)}


def _ray_child(workers: int, repeats: int, window_s: float) -> None:
    """One Ray configuration in a fresh process: Ray started with ``workers`` CPUs, nothing left over."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    source = workloads.CpuBound()
    m = measure(f"ray x{workers}", lambda: tb.to_dataset(source, executor="ray", workers=workers),
                repeats=repeats, warmup=8, window_s=window_s, min_elements=24)
    print("RESULT " + json.dumps({"rates": m.rates, "error": m.error}), flush=True)
    os._exit(0)  # the pipeline's background threads would otherwise keep calling a Ray that is going away


def ray_figures(repeats: int, window_s: float) -> dict[str, Any]:
    source = workloads.CpuBound()
    sig = tb.infer_spec(source).signature
    out: dict[str, Any] = {}
    out["plain"] = measure("plain", lambda: plain_from_generator(source, sig), repeats=repeats, warmup=8,
                           window_s=window_s, min_elements=24)
    for workers in (1, 2):
        done = subprocess.run(
            [sys.executable, __file__, "--ray-child", str(workers), str(repeats), str(window_s)],
            capture_output=True, text=True, timeout=900,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        m = Measurement(f"ray x{workers}")
        if line is None:
            m.error = f"the Ray run failed: {done.stderr.strip().splitlines()[-1:] }"
        else:
            got = json.loads(line[len("RESULT "):])
            m.rates, m.error = got["rates"], got["error"]
        out[f"ray x{workers}"] = m
    return out


def section(repeats: int = 3, window_s: float = 3.0) -> str:
    mat = materialize_figures(repeats)
    ray_m = ray_figures(repeats, window_s)
    plain = ray_m["plain"].median
    r1, r2 = ray_m["ray x1"].median, ray_m["ray x2"].median
    ratio_mat = mat["later"] / mat["first"]
    lines = [
        "## Beyond one process: materialize and Ray",
        "",
        "| target | ratio | needed | met |",
        "|---|---:|---:|:---:|",
        f"| materialize: later epochs vs the first (W1, {FINITE} batches) | {ratio_mat:.1f}x | 10x | "
        f"{'yes' if ratio_mat >= 10 else 'NO'} |",
        f"| Ray executor, 2 local workers, vs plain from_generator (W1) | {r2 / plain:.2f}x | 1.6x | "
        f"{'yes' if r2 / plain >= 1.6 else 'NO'} |",
        "",
        "| method | elements/s | spread |",
        "|---|---:|---:|",
        f"| materialize, first epoch (runs the source: process executor, save, assemble) | {mat['first']:.1f} | |",
        f"| materialized, later epochs (Dataset.load, no Python) | {mat['later']:.1f} | |",
    ]
    for name in ("plain", "ray x1", "ray x2"):
        m = ray_m[name]
        low, high = m.spread
        label = {"plain": "plain from_generator (W1)", "ray x1": "tfbridge ray, 1 local worker",
                 "ray x2": "tfbridge ray, 2 local workers"}[name]
        shown = f"{m.median:.1f}" if not m.error else f"failed: {m.error}"
        lines.append(f"| {label} | {shown} | {low:.1f} .. {high:.1f} |")
    lines += ["", f"Ray scaling, 2 workers / 1 worker: {r2 / r1:.2f}x (2 cores).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ray-child"]:
        _ray_child(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    print(section(), flush=True)

"""Process workers' start-up and memory: a plain class, a Keras PyDataset, and a PyDataset holding a big array.

Each row starts a fresh `ProcessExecutor(2)` and runs one pass of 64 elements through it (the sources are in
`_workers_sources.py`, a module that imports Keras at the top, as users' modules do; the plain class in
`_workers_plain.py`, which does not). Figures: seconds from the
start of the pass to its first element (the workers' start included: interpreter, unpickling the source and
whatever that imports), and each worker's memory after the pass from /proc/<pid>/status: VmRSS (all it has
resident, shared pages it touched included) and RssAnon (its own memory). "before" is the plain cloudpickle
route (`processes._LIGHT = False`): a PyDataset's workers import Keras and TensorFlow, and a big array is copied
into each worker. "light" is tfbridge's route: a light copy of the PyDataset (no Keras import) and the big array
shared read-only through one memory file. `python benchmarks/workers.py` prints the section; `make bench` writes
it into RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _workers_plain  # noqa: E402
import _workers_sources as sources  # noqa: E402
import numpy as np  # noqa: E402

import tfbridge as tb  # noqa: E402
from tfbridge.executors import processes  # noqa: E402
from tfbridge.executors.processes import ProcessExecutor  # noqa: E402
from tfbridge.sources.indexed import IndexedSource  # noqa: E402

TITLE = "## Process workers: start-up and memory"
ELEMENTS = 64


def _memory(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) of ``pid`` in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = int(value.split()[0]) / 1024 if name in ("VmRSS", "RssAnon") else 0
    return fields["VmRSS"], fields["RssAnon"]


def measure(source: Any, light: bool) -> tuple[float, float, float, float]:
    """(seconds to the first element, pass seconds, max VmRSS MB, max RssAnon MB) of one fresh pool of 2."""
    processes._LIGHT = light
    ex = ProcessExecutor(2)
    try:
        started = time.perf_counter()
        results = ex.imap(IndexedSource(source, True).task(None), range(ELEMENTS))
        next(results)
        first = time.perf_counter() - started
        for _ in results:
            pass
        whole = time.perf_counter() - started
        memory = [_memory(pid) for pid in ex.pids()]
    finally:
        ex.close()
        processes._LIGHT = True
    return first, whole, max(m[0] for m in memory), max(m[1] for m in memory)


def run(big_mb: int) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    features = np.random.default_rng(0).random((big_mb * 2**20 // (16 * 4), 16), dtype=np.float32)
    cases = [
        ("plain class (numpy)", _workers_plain.Plain(ELEMENTS), [True]),
        ("Keras PyDataset (numpy)", sources.NumpyPyDataset(ELEMENTS), [False, True]),
        (f"Keras PyDataset + {big_mb} MB array attribute", sources.ArrayPyDataset(features), [False, True]),
    ]
    out = []
    for name, source, modes in cases:
        for light in modes:
            mode = "light" if light else "before"
            figures = measure(source, light)
            print(f"{name:45} {mode:7} first {figures[0]:.2f} s, pass {figures[1]:.2f} s, "
                  f"VmRSS {figures[2]:.0f} MB, RssAnon {figures[3]:.0f} MB", flush=True)
            out.append((name, mode if name != "plain class (numpy)" else "-", figures))
    return out


def section(big_mb: int = 400) -> str:
    import tensorflow as tf

    print(f"\n{TITLE[3:]}", flush=True)
    load_before = os.getloadavg()[0]
    results = run(big_mb)
    load = (load_before + os.getloadavg()[0]) / 2
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/workers.py on {dt.date.today().isoformat()}: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, tfbridge "
        f"{tb.__version__}. 2 workers, one pass of {ELEMENTS} elements. Load average during the run: about "
        f"{load:.1f}. Command: `python benchmarks/workers.py --big-mb {big_mb}`.",
        "",
        "| source | route | first element | whole pass | worker VmRSS (max) | worker RssAnon (max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, mode, (first, whole, rss, anon) in results:
        lines.append(f"| {name} | {mode} | {first:.2f} s | {whole:.2f} s | {rss:.0f} MB | {anon:.0f} MB |")
    lines += [
        "",
        "VmRSS counts the pages of a shared array a worker has touched (a few here); however many it touches, they "
        "are one copy in memory for every worker, where \"before\" had a private copy in each (RssAnon).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-mb", type=int, default=400, help="size of the array attribute")
    args = parser.parse_args()
    print("\n" + section(args.big_mb))


if __name__ == "__main__":
    main()

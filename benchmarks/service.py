"""tf.data service throughput with 1 and 2 local workers (the issue-6 target), for `make bench`.

A graph-native CPU-heavy map (eight 256x256 matmuls + tanh per element, scalar result) goes through
`tb.distribute(..., processing_mode="distributed_epoch")` to a dispatcher and 1 or 2 worker processes started with
`tfbridge service ...` on localhost. Per-worker pipelines:
- the map run sequentially with one intra-op thread: one core per worker, the usual scale-out unit;
- the map with `num_parallel_calls=AUTOTUNE`: one worker can already use every core;
- a light map (one 64x64 matmul) sent element by element: bounded by the service's one request per element,
  which is why the heavy pipelines batch (16) before `distribute`.
The same pipelines without the service are given for reference. Elements/s is the median of 3 repetitions,
timed from the first element to the last (job start-up excluded).

    .venv/bin/python benchmarks/service.py
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

import tfbridge as tb

REPEATS = 3
HEAVY_ELEMENTS = 1600
LIGHT_ELEMENTS = 3000
BATCH = 16
_START_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 20.0
_SIZE = 256
_ROUNDS = 8
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _heavy(i: tf.Tensor) -> tf.Tensor:
    m = tf.random.stateless_uniform([_SIZE, _SIZE], seed=tf.stack([i, tf.constant(0, tf.int64)]))
    for _ in range(_ROUNDS):
        m = tf.tanh(tf.linalg.matmul(m, m) / _SIZE)
    return tf.reduce_sum(m)


def _light(i: tf.Tensor) -> tf.Tensor:
    m = tf.random.stateless_uniform([64, 64], seed=tf.stack([i, tf.constant(0, tf.int64)]))
    return tf.reduce_sum(tf.linalg.matmul(m, m))


def one_core() -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return tf.data.Dataset.range(HEAVY_ELEMENTS).map(_heavy).batch(BATCH).with_options(options)


def parallel() -> tf.data.Dataset:
    return tf.data.Dataset.range(HEAVY_ELEMENTS).map(_heavy, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH)


def light() -> tf.data.Dataset:
    return tf.data.Dataset.range(LIGHT_ELEMENTS).map(_light)


PIPELINES: list[tuple[str, Callable[[], tf.data.Dataset]]] = [
    (f"heavy map, sequential, 1 intra-op thread, batch({BATCH})", one_core),
    (f"heavy map, num_parallel_calls=AUTOTUNE, batch({BATCH})", parallel),
    ("light map, unbatched (one request per element)", light),
]


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by this process and the processes ``pids`` (Linux /proc; 0 for them elsewhere)."""
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime
    return total


def _rate(make: Callable[[], tf.data.Dataset], pids: list[int]) -> tuple[float, float]:
    """(elements/s, cores busy in this process and ``pids``), from the first batch to the last of one pass;
    elements are examples, not batches."""
    it = iter(make())
    next(it)
    start, cpu = time.perf_counter(), _cpu_s(pids)
    count = sum(int(tf.size(b)) for b in it)
    wall = time.perf_counter() - start
    return count / wall, (_cpu_s(pids) - cpu) / wall


def _median_rate(make: Callable[[], tf.data.Dataset], pids: list[int]) -> tuple[float, float]:
    _rate(lambda: make().take(20), pids)  # warm-up: functions traced, threads started
    runs = [_rate(make, pids) for _ in range(REPEATS)]
    return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfbridge", "service", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            msg = f"{proc.args} exited with {proc.wait()} before listening"
            raise RuntimeError(msg)
        if "listening on " in line:
            return proc, line.split("listening on ")[1].split(",")[0].strip()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=_STOP_TIMEOUT_S)


@contextmanager
def cluster(workers: int) -> Iterator[tuple[str, list[int]]]:
    """A dispatcher and ``workers`` worker processes on localhost; yields the dispatcher address and the pids."""
    procs: list[subprocess.Popen[str]] = []
    try:
        dispatcher, address = _start(["dispatcher", "--port", "0"])
        procs.append(dispatcher)
        for _ in range(workers):
            procs.insert(0, _start(["worker", "--dispatcher", address])[0])  # stopped before the dispatcher
        yield address, [p.pid for p in procs]
    finally:
        _stop(procs)


def measure() -> dict[str, dict[str, tuple[float, float]]]:
    """{pipeline: {"local" | "1w" | "2w": (elements/s, cores busy)}}."""
    rates: dict[str, dict[str, tuple[float, float]]] = {name: {} for name, _ in PIPELINES}
    for name, build in PIPELINES:
        rates[name]["local"] = _median_rate(build, [])
    for workers in (1, 2):
        with cluster(workers) as (address, pids):
            for name, build in PIPELINES:
                rates[name][f"{workers}w"] = _median_rate(lambda build=build: tb.distribute(build(), address), pids)
    return rates


def section(rates: dict[str, Any] | None = None) -> str:
    rates = rates or measure()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (
        f"tf.data service on localhost, `processing_mode=\"distributed_epoch\"`; heavy: {HEAVY_ELEMENTS} elements "
        f"of {_ROUNDS} {_SIZE}x{_SIZE} matmuls each, light: {LIGHT_ELEMENTS} elements of one 64x64 matmul; "
        f"elements/s, median of {REPEATS}. This machine has {os.cpu_count()} cores, shared by the client, the "
        f"dispatcher and the workers: 2 workers cannot get more than 2 cores between them (load average at the "
        f"end of the run: {load}, other work included). In brackets: cores busy in the client, dispatcher and "
        "workers during the timed pass."
    )
    rows = [
        header,
        "",
        "| per-worker pipeline | no service (in process) | 1 worker | 2 workers | 2 workers / 1 worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rates.items():
        cells = " | ".join(f"{r[k][0]:.0f} ({r[k][1]:.1f})" for k in ("local", "1w", "2w"))
        rows.append(f"| {name} | {cells} | {r['2w'][0] / r['1w'][0]:.2f}x |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(section(), flush=True)

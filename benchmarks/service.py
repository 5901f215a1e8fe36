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


def _rate(make: Callable[[], tf.data.Dataset]) -> float:
    """Elements/s (examples, not batches) from the first batch to the last of one pass."""
    it = iter(make())
    next(it)
    start = time.perf_counter()
    count = sum(int(tf.size(b)) for b in it)
    return count / (time.perf_counter() - start)


def _median_rate(make: Callable[[], tf.data.Dataset]) -> float:
    _rate(lambda: make().take(20))  # warm-up: functions traced, threads started
    return statistics.median(_rate(make) for _ in range(REPEATS))


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
def cluster(workers: int) -> Iterator[str]:
    """A dispatcher and ``workers`` worker processes on localhost; yields the dispatcher address."""
    procs: list[subprocess.Popen[str]] = []
    try:
        dispatcher, address = _start(["dispatcher", "--port", "0"])
        procs.append(dispatcher)
        for _ in range(workers):
            procs.insert(0, _start(["worker", "--dispatcher", address])[0])  # stopped before the dispatcher
        yield address
    finally:
        _stop(procs)


def measure() -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, float]] = {name: {} for name, _ in PIPELINES}
    for name, build in PIPELINES:
        rates[name]["local"] = _median_rate(build)
    for workers in (1, 2):
        with cluster(workers) as address:
            for name, build in PIPELINES:
                rates[name][f"{workers}w"] = _median_rate(lambda build=build: tb.distribute(build(), address))
    return rates


def section(rates: dict[str, Any] | None = None) -> str:
    rates = rates or measure()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (
        f"tf.data service on localhost, `processing_mode=\"distributed_epoch\"`; heavy: {HEAVY_ELEMENTS} elements "
        f"of {_ROUNDS} {_SIZE}x{_SIZE} matmuls each, light: {LIGHT_ELEMENTS} elements of one 64x64 matmul; "
        f"elements/s, median of {REPEATS}. This machine has {os.cpu_count()} cores, shared by the client, the "
        f"dispatcher and the workers: 2 workers cannot get more than 2 cores between them (load average at the "
        f"end of the run: {load})."
    )
    rows = [
        header,
        "",
        "| per-worker pipeline | no service (in process) | 1 worker | 2 workers | 2 workers / 1 worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rates.items():
        rows.append(
            f"| {name} | {r['local']:.0f} | {r['1w']:.0f} | {r['2w']:.0f} | {r['2w'] / r['1w']:.2f}x |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(section(), flush=True)

"""`executor="auto"` against every executor, first epoch included, for `make bench`.

Each source is made into a dataset by `tb.to_dataset(source)` (auto) and with each executor named; every run is
a fresh dataset: the first epoch is timed from the `to_dataset` call (peek, choice, worker start-up included) to
the end of its first epoch, then two more epochs are timed. Epochs are pulled by a compiled TensorFlow loop, as
training pulls them (see src/tfbridge/_bench.py). Figures: seconds, median over the repetitions; "auto / best"
compares auto with the fastest executor on the first epoch and on all three epochs, and should stay at or under
1.10. `python benchmarks/auto.py` runs this section alone and writes it into RESULTS.md.

Sources: the `make bench` workloads (benchmarks/workloads.py) at lengths whose serial epoch takes a few seconds,
a Keras PyDataset of 10 batches with 4 ms of work each (its workers would import Keras and TensorFlow), and the
torch Dataset and grain MapDataset of benchmarks/sources.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
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
import workloads  # noqa: E402
from hf import write_section  # noqa: E402

import tfbridge as tb  # noqa: E402

TITLE = "## `executor=\"auto\"` against every executor, first epoch included"
EPOCHS_AFTER = 2
NOTE_OVER = (
    "Where auto / best is above 1.10, `auto` misjudged that source: on short epochs of big batches (W3, W4: 60 "
    "batches of 38.5 MB) worker processes end up little faster than serial and their start-up is not repaid within "
    "an epoch, while the peek, which keeps its samples, measures each batch's first allocation of fresh memory "
    "(46-80 ms of CPU, against about 5 ms once memory is reused), so `auto` can overestimate what processes save."
)


class Sized:
    """A workload of benchmarks/workloads.py cut to ``n`` elements (its epoch then ends)."""

    def __init__(self, workload: Any, n: int) -> None:
        self.workload, self.n = workload, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.workload[i]


def keras_batches(n: int = 10, ms: float = 4.0) -> Any:
    """A keras.utils.PyDataset of ``n`` batches of float32[32,16] + int32[32], ``ms`` of pure Python each."""
    import keras

    class FourMs(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.loops = int(ms * workloads.LOOPS_PER_MS)

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> Any:
            workloads.burn(self.loops)
            return np.full((32, 16), i, np.float32), np.full((32,), i % 2, np.int32)

    return FourMs()


def cases() -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, source, to_dataset arguments) for each source."""
    import sources

    return [
        ("W1 CPU-bound, 200 batches x 20 ms", Sized(workloads.CpuBound(), 200), {}),
        ("W2 latency-bound, 400 batches x 10 ms sleep", Sized(workloads.LatencyBound(), 400), {}),
        ("W3 big batches (38.5 MB), 60 of them", Sized(workloads.BigBatches(), 60), {}),
        ("W4 big + 30 ms CPU, 60 batches", Sized(workloads.BigCpuBound(), 60), {}),
        ("Keras PyDataset, 10 batches x 4 ms", keras_batches(), {}),
        ("torch Dataset, 20,000 examples, batch_size=32", sources.torch_dataset(20_000), {"batch_size": 32}),
        ("grain MapDataset, 625 batches of 32", sources.grain_dataset(20_000), {}),
    ]


METHODS: list[tuple[str, dict[str, Any]]] = [
    ("auto", {}),
    ("serial", {"executor": "serial"}),
    ("thread", {"executor": "thread"}),
    ("process", {"executor": "process"}),
]


def _puller(dataset: Any) -> Any:
    import tensorflow as tf

    def epoch() -> Any:
        count = tf.constant(0, tf.int64)
        for _ in dataset:
            count += 1
        return count

    return tf.function(epoch)


def run_once(source: Any, kwargs: dict[str, Any]) -> tuple[float, float]:
    """(seconds from to_dataset to the end of the first epoch, seconds of the next epochs)."""
    start = time.perf_counter()
    dataset = tb.to_dataset(source, **kwargs)
    pull = _puller(dataset)
    first = int(pull())
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(EPOCHS_AFTER):
        got = int(pull())
        assert got == first, f"an epoch gave {got} elements, the first {first}"
    after_s = time.perf_counter() - start
    del dataset, pull
    gc.collect()
    return first_s, after_s


def _forget(source: Any) -> None:
    """Drop what an earlier call remembered about ``source`` (its peek, auto's earlier decisions): each auto run
    decides afresh, as a new process would."""
    from tfbridge.executors import _EARLIER
    from tfbridge.sources import _memo

    _memo._MEMO.pop(id(source), None)
    _EARLIER.pop(id(source), None)


def run(repeats: int) -> list[dict[str, Any]]:
    out = []
    for name, source, kwargs in cases():
        _forget(source)
        chosen = tb.inspect(source).executor
        print(f"\n{name}\n  auto picks {chosen['name']} x{chosen['workers']}: {chosen['reason']}", flush=True)
        times: dict[str, list[tuple[float, float]]] = {m: [] for m, _ in METHODS}
        for _ in range(repeats):
            for method, extra in METHODS:  # side by side in each repetition: load on the machine hits all alike
                _forget(source)
                times[method].append(run_once(source, {**kwargs, **extra}))
        row: dict[str, Any] = {"name": name, "choice": chosen}
        for method, runs in times.items():
            first = statistics.median(f for f, _ in runs)
            total = statistics.median(f + a for f, a in runs)
            row[method] = (first, total)
            print(f"  {method:8s} first epoch {first:7.2f} s   3 epochs {total:7.2f} s", flush=True)
        out.append(row)
    return out


def section(repeats: int = 3) -> str:
    started = time.perf_counter()
    print(f"\n{TITLE[3:]}", flush=True)
    load_before = os.getloadavg()[0]
    rows = run(repeats)
    seconds = time.perf_counter() - started
    load = (load_before + os.getloadavg()[0]) / 2
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/auto.py on {dt.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, tfbridge {tb.__version__}. Each method {repeats} times, side by "
        "side, each a fresh dataset: the first epoch is timed from the `to_dataset` call (peek, choice and worker "
        f"start-up included) to its end, then {EPOCHS_AFTER} more epochs; epochs pulled by a compiled TensorFlow "
        "loop. Figures: seconds, median. auto / best: auto's time over the fastest executor's (first epoch; all "
        f"three epochs). Load average during the run: about {load:.1f} on {os.cpu_count()} cores (`auto` decides from "
        "CPU time, not from how busy the machine is: with other work on every core, worker processes gain less "
        f"than it assumes). Section run: {seconds / 60:.1f} min. Command: `python benchmarks/auto.py --repeats "
        f"{repeats}`.",
        "",
        "| source | auto picks | auto | serial | thread | process | auto / best, first epoch | auto / best, 3 epochs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        names = [m for m, _ in METHODS if m != "auto"]
        best_first = min(row[m][0] for m in names)
        best_total = min(row[m][1] for m in names)
        cells = " | ".join(f"{row[m][0]:.2f} / {row[m][1]:.2f}" for m, _ in METHODS)
        choice = row["choice"]
        lines.append(
            f"| {row['name']} | {choice['name']} x{choice['workers']} | {cells} | {row['auto'][0] / best_first:.2f} | "
            f"{row['auto'][1] / best_total:.2f} |"
        )
    lines += [
        "",
        "Cells: first epoch / three epochs, seconds. Why auto chose as it did, in its own words:",
        "",
    ]
    lines += [f"- {row['name']}: {row['choice']['reason']}." for row in rows]
    over = [row["name"] for row in rows if row["auto"][0] / min(row[m][0] for m, _ in METHODS if m != "auto") > 1.10]
    if over:
        lines += ["", f"Above 1.10 in this run: {', '.join(over)}. {NOTE_OVER}"]
    else:
        lines += ["", "In this run `auto` was within 10% of the fastest executor, or faster, on every source, first "
                  "epoch included."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    text = section(args.repeats)
    write_section(text, title=TITLE)
    print("\n" + text)


if __name__ == "__main__":
    main()

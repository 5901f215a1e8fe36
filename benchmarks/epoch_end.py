"""How long after its last element an epoch ends, on tfbridge's routes, with tf.data's autotuning on and off.

A pass iterated inside a `tf.function` (`for batch in dataset`, as custom training loops and tfbridge's own
benchmarks pull epochs) ends when its iterator is done, and with tf.data's autotuning on that waits for the
autotuning model's thread, which wakes at 10 ms x (2**k - 1) after the pass began. tfbridge's datasets turn the
model off (`pipeline.ends_promptly`); "autotune on" below is the same dataset with `options.autotune.enabled =
True` set again, which is what every dataset had before.

Routes: a 2,000-element generator-function stream (0.3 ms per element) through `tb.pad_batch` with explicit bucket
boundaries (batches of 32, unknown cardinality); the same stream through `tb.to_dataset`; a 2,000-element indexed
source (0.3 ms per element) through `tb.to_dataset` (serial executor); a HuggingFace dataset of 4,096 token-id
lists (lengths 5..200) through `tb.pad_batch(tb.to_dataset(ds, label="label"), 32)` (gathered in the graph),
pulled by a loop that does about 20 ms of matrix work per batch (a training step). Every epoch is a new call of
a compiled loop (a new iterator). Figures: milliseconds from the last element to the end of the pass, per epoch.
The model thread's wake-up is a race with the pass's end, so some epochs end on time either way.
`python benchmarks/epoch_end.py` prints them and writes its section into RESULTS.md.
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
from hf import write_section  # noqa: E402

import tfbridge as tb  # noqa: E402

TITLE = "## End of an epoch: from the last element to the end of the pass"
N = 2000
BOUNDARIES = [10, 20, 40]


def stream() -> Any:
    for i in range(N):
        time.sleep(0.0003)
        yield np.full((i % 50 + 1,), i % 7, np.int32), np.int32(i % 2)


class Rows:
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        time.sleep(0.0003)
        return np.full((8,), i % 7, np.float32), np.int32(i % 2)


def routes() -> list[tuple[str, Any, int]]:
    """(name, dataset factory, matrix products per element in the consuming loop)."""
    import hf

    tokens = hf.token_dataset(4096)
    return [
        ("stream, pad_batch(32, buckets=[10, 20, 40])", lambda: tb.pad_batch(stream, 32, buckets=BOUNDARIES), 0),
        ("stream, to_dataset", lambda: tb.to_dataset(stream, batched=False), 0),
        ("indexed source, to_dataset (serial)", lambda: tb.to_dataset(Rows(), batched=False, executor="serial"), 0),
        ("HF token lists (4,096), pad_batch(32)", lambda: tb.pad_batch(tb.to_dataset(tokens, label="label"), 32), 20),
    ]


def autotune_on(dataset: Any) -> Any:
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = True
    return dataset.with_options(options)


def compiled_epochs(dataset: Any, epochs: int, work: int) -> list[tuple[float, float]]:
    """(seconds to the last element, milliseconds from it to the end of the pass) per epoch, each epoch a new
    call of a compiled loop doing ``work`` products of 300x300 matrices (about 1 ms each) per element."""
    import tensorflow as tf

    m = tf.random.normal((300, 300))

    @tf.function
    def epoch() -> Any:
        start = tf.timestamp()
        last, acc = start, tf.zeros(())
        for element in dataset:
            y = m
            for _ in range(work):
                y = tf.matmul(y, m) / 300.0
            acc += tf.reduce_sum(y) + tf.cast(tf.reduce_sum(tf.nest.flatten(element)[0]), tf.float32)
            with tf.control_dependencies([acc]):
                last = tf.timestamp()
        return last - start, tf.timestamp() - last

    out = []
    for _ in range(epochs):
        to_last, gap = epoch()
        out.append((float(to_last), float(gap) * 1e3))
    return out


def run(epochs: int) -> list[tuple[str, str, list[tuple[float, float]]]]:
    out = []
    for name, make, work in routes():
        for setting, wrap in (("autotune on (before)", autotune_on), ("as tfbridge returns it", lambda d: d)):
            times = compiled_epochs(wrap(make()), epochs, work)
            gaps = " ".join(f"{g:.0f}" for _, g in times)
            print(f"  {name:45s} {setting:24s} last element at {statistics.median(t for t, _ in times):.2f} s; "
                  f"end +ms: {gaps}", flush=True)  # fmt: skip
            out.append((name, setting, times))
    return out


def section(epochs: int = 10) -> str:
    import tensorflow as tf

    started = time.perf_counter()
    print(f"\n{TITLE[3:]}", flush=True)
    load_before = os.getloadavg()[0]
    results = run(epochs)
    seconds = time.perf_counter() - started
    load = (load_before + os.getloadavg()[0]) / 2
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/epoch_end.py on {dt.date.today().isoformat()}: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, tfbridge "
        f"{tb.__version__}. {epochs} epochs per row, each a new call of a compiled loop (for the HF row about 20 ms "
        "of matrix work per batch); milliseconds from the last element to the end of the pass. \"autotune on\" is the "
        "same dataset with `options.autotune.enabled = True` set again (what every tfbridge dataset had before). "
        f"Load average during the run: about {load:.1f} on {os.cpu_count()} cores. Section run: "
        f"{seconds / 60:.1f} min. Command: `python benchmarks/epoch_end.py --epochs {epochs}`.",
        "",
        "| route | autotuning | last element at (median) | end after it, ms: median | max | every epoch |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, setting, times in results:
        gaps = [g for _, g in times]
        lines.append(
            f"| {name} | {setting} | {statistics.median(t for t, _ in times):.2f} s | {statistics.median(gaps):.0f} | "
            f"{max(gaps):.0f} | {' '.join(f'{g:.0f}' for g in gaps)} |"
        )
    lines += [
        "",
        "With autotuning on, some epochs end hundreds of milliseconds late: at the model thread's next wake-up "
        "(10 ms x (2**k - 1) after the pass began), which races with the pass's end, so other epochs end on time. "
        "Without the model no epoch waits for it. What is left is the pass's own end: one more step into Python "
        "finds the source ended (and whether the pass failed, whose error is then raised by the pass's own "
        "functions). Until this run that error was raised by a one-element dataset appended to the pass, whose "
        "functions TensorFlow made only when the pass reached it: 9-12 ms at the end of every pass.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    text = section(args.epochs)
    write_section(text, title=TITLE)
    print("\n" + text)


if __name__ == "__main__":
    main()

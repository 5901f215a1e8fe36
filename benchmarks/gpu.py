"""Ready for a GPU: a small convolutional model trained on the JPEG workload (benchmarks/real.py, (a)) for a fixed
number of steps with each way of feeding it, reporting steps per second and the share of the step time spent
waiting for input.

Each step takes the next batch from the dataset's iterator (the time in ``next()`` is the wait for input) and
runs one compiled training step on it (forward, backward, optimiser update), waiting for its loss so that the
device's work is inside the step's time. On a machine with a GPU the model is a 4-stage convolutional network
and the run is long; without one (or with ``--cpu``) a short CPU mode runs instead (few steps, a tiny model,
few JPEG files), which CI runs (tests/test_bench_gpu_cpu_mode.py).

Output: one line per method, ``method="..." steps=N steps_per_s=X input_wait=S first_batch_s=T step_s=U`` (S:
the share of the step time spent in ``next()``, 0..1), or ``method="..." error="..."``; a reference line,
``method="no input (one batch again)"``, times the training step alone.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import realdata  # noqa: E402  (light: grain's spawned workers re-import this script's top level)

REFERENCE = "no input (one batch again)"


@dataclass(frozen=True)
class Mode:
    name: str
    steps: int
    warmup: int
    jpegs: int
    filters: tuple[int, ...]  # one convolution (+ batch norm, ReLU) per entry
    stride: int


GPU_MODE = Mode("gpu", steps=300, warmup=20, jpegs=512, filters=(32, 64, 128, 256), stride=2)
CPU_MODE = Mode("cpu", steps=6, warmup=2, jpegs=64, filters=(8,), stride=4)


def model_and_step(mode: Mode) -> Any:
    """A small convolutional classifier (10 classes) and its compiled training step ``step(x, y) -> loss``."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layers: list[Any] = [keras.Input((realdata.CROP, realdata.CROP, 3))]
    for filters in mode.filters:
        layers += [keras.layers.Conv2D(filters, 3, strides=mode.stride, padding="same"),
                   keras.layers.BatchNormalization(), keras.layers.ReLU()]  # fmt: skip
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return model, tf.function(step)


@dataclass
class Figures:
    steps: int
    seconds: float
    waiting: float
    first_batch_s: float

    @property
    def line(self) -> str:
        return (
            f"steps={self.steps} steps_per_s={self.steps / self.seconds:.3f} "
            f"input_wait={self.waiting / self.seconds:.3f} first_batch_s={self.first_batch_s:.3f} "
            f"step_s={self.seconds / self.steps:.4f}"
        )


def train(make: Any, mode: Mode) -> Figures:
    """``mode.warmup`` steps (tracing, queues filling), then ``mode.steps`` timed steps on a fresh ``make()``."""
    _, step = model_and_step(mode)
    start = time.perf_counter()
    dataset = make()
    iterator = iter(dataset)
    x, y = next(iterator)
    first = time.perf_counter() - start
    step(x, y).numpy()
    for _ in range(mode.warmup - 1):
        x, y = next(iterator)
        step(x, y).numpy()
    seconds = waiting = 0.0
    for _ in range(mode.steps):
        t0 = time.perf_counter()
        x, y = next(iterator)
        t1 = time.perf_counter()
        step(x, y).numpy()  # the loss in hand: the device has finished the step
        t2 = time.perf_counter()
        waiting += t1 - t0
        seconds += t2 - t0
    del iterator, dataset
    gc.collect()
    return Figures(mode.steps, seconds, waiting, first)


def reference(ctx: Any, mode: Mode) -> Figures:
    """The training step alone: the same batch every step, nothing waited for."""
    import realkeras
    import tensorflow as tf

    x, y = realkeras.JpegBatches(ctx.paths)[0]
    x, y = tf.constant(x), tf.constant(y)

    def again() -> Any:
        return tf.data.Dataset.from_tensors((x, y)).repeat()

    return train(again, mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the short CPU mode even when a GPU is present")
    parser.add_argument("--steps", type=int, help="timed steps per method (default: by mode)")
    parser.add_argument("--methods", help="comma-separated name prefixes of the methods to run (default: all)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")

    import real

    from tfbridge import executors

    wanted = [p.strip() for p in args.methods.split(",")] if args.methods else None
    methods = real.methods("images", executors.cores())
    chosen = [m for m in methods if not wanted or any(m[0].startswith(p) for p in wanted)]
    if not chosen:
        parser.error(f"no method matches {args.methods!r}; the methods: " + "; ".join(m[0] for m in methods))

    import tensorflow as tf
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads absl flags; a script without absl.app parses none
        flags.FLAGS.mark_as_parsed()
    gpus = tf.config.list_physical_devices("GPU")
    mode = CPU_MODE if args.cpu or not gpus else GPU_MODE
    if args.steps:
        mode = Mode(mode.name, args.steps, mode.warmup, mode.jpegs, mode.filters, mode.stride)
    device = gpus[0].name if gpus and mode is GPU_MODE else "CPU"
    print(f"gpu.py: mode={mode.name} device={device} steps={mode.steps} warmup={mode.warmup} batch={realdata.BATCH} "
          f"image={realdata.CROP}x{realdata.CROP} conv_filters={','.join(map(str, mode.filters))} "
          f"methods={len(chosen)}", flush=True)  # fmt: skip
    data = tempfile.mkdtemp(prefix="tfbridge-gpu-jpegs-")
    failed = 0
    try:
        realdata.write_jpegs(data, mode.jpegs)
        ctx = real.Context("images", data, real.Sizes())
        print(f'method="{REFERENCE}" {reference(ctx, mode).line}', flush=True)
        for name, _, build in chosen:
            try:
                figures = train(lambda b=build: b(ctx), mode)
            except Exception as exc:  # a method that fails is reported, not hidden
                failed += 1
                message = (str(exc).strip().splitlines() or [""])[0][:200].replace('"', "'")
                print(f'method="{name}" error="{type(exc).__name__}: {message}"', flush=True)
                continue
            print(f'method="{name}" {figures.line}', flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Real workloads for `make bench`: JPEG images and tokenised text, every usual way of feeding them to tf.data
side by side, with the data made by the benchmark itself.

- (a) images: a Keras ``PyDataset`` whose ``__getitem__`` decodes 32 JPEGs (256x256, written once to a temporary
  directory) with Pillow, random-crops 224x224, flips and scales to float32 (benchmarks/realkeras.py);
- (b) text: sentences tokenised in pure Python (word pieces), one example per index, batched by 32 with bucketing
  (benchmarks/realdata.py);
- (c) HuggingFace datasets: benchmarks/hf.py's section of RESULTS.md (not repeated here).

Methods: tfbridge with ``executor="auto"`` (no arguments) and each executor; plain ``from_generator``; Keras's own
PyDataset workers (2 threads, 2 processes) read through Keras's PyDataset adapter as ``fit`` reads them; grain
(``MapDataset`` + ``mp_prefetch`` with 2 workers) read through Keras's grain adapter as ``fit`` reads it; and
the native tf.data route as the ceiling. Each method runs in a fresh interpreter (started by this script), so its
memory and its workers are its own: several repetitions, each a fresh pipeline, give the time to the first
batch (from the call that builds the dataset to the first batch in hand) and the steady-state rate (batches per
second over a timed window after a warm-up, pulled by a compiled TensorFlow loop as training pulls them); the
parent samples the resident memory of the interpreter and all its worker processes while it runs.

``python benchmarks/real.py`` runs this section alone and writes it into RESULTS.md; ``--quick`` (or
``BENCH_QUICK=1``) runs a small version and only prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import realdata  # noqa: E402  (light: numpy and Pillow; this module's top level stays light for spawned workers)

TITLE = "## Real workloads: JPEG images and tokenised text"
WORKLOADS = ("images", "text")
PEERS = 2  # workers for Keras's and grain's own parallelism
RESULT = "RESULT "  # the line a method's interpreter prints its figures on


def quick_mode() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


@dataclass(frozen=True)
class Sizes:
    repeats: int = 3
    window_s: float = 2.0
    warmup: int = 8
    min_batches: int = 16
    jpegs: int = 512
    sentences: int = 20_000
    buckets: int = 8
    timeout_s: float = 600.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(repeats=1, window_s=0.5, warmup=2, min_batches=4, jpegs=64, sentences=2_000, timeout_s=300.0)


# -- the methods (run inside a method's own interpreter) ---------------------------------------------------------


class Context:
    """What the methods of one workload share, made once per interpreter before anything is timed."""

    def __init__(self, workload: str, data: str, sizes: Sizes) -> None:
        from tfbridge import executors

        self.workload, self.sizes, self.cores = workload, sizes, executors.cores()
        if workload == "images":
            self.paths = sorted(str(p) for p in Path(data).glob("*.jpg"))
        else:
            import tfbridge as tb

            self.corpus = realdata.Corpus(sizes.sentences)
            lengths = [len(self.corpus.example(i)[0]) for i in range(sizes.sentences)]
            self.boundaries = [int(b) for b in tb.bucket_boundaries(lengths, sizes.buckets)]

    def source(self) -> Any:
        """A fresh source object of the kind tfbridge and ``from_generator`` take."""
        if self.workload == "images":
            import realkeras

            return realkeras.JpegBatches(self.paths)
        return realdata.Sentences(self.corpus)


def _tfbridge(ctx: Context, **kwargs: Any) -> Any:
    import tfbridge as tb

    if ctx.workload == "images":
        return tb.to_dataset(ctx.source(), **kwargs)
    return tb.pad_batch(ctx.source(), realdata.BATCH, buckets=ctx.boundaries, **kwargs)


def _tfbridge_batches(ctx: Context) -> Any:
    """tfbridge given what a Keras user writes for (b): the PyDataset of batches padded to their longest."""
    import realkeras

    import tfbridge as tb

    return tb.to_dataset(realkeras.SentenceBatches(ctx.corpus))


def _plain(ctx: Context) -> Any:
    """The usual hand-written bridge: ``from_generator`` over the source in order (bucketed for text)."""
    import tensorflow as tf

    from tfbridge._bench import plain_from_generator

    if ctx.workload == "images":
        signature = (
            tf.TensorSpec((realdata.BATCH, realdata.CROP, realdata.CROP, 3), tf.float32),
            tf.TensorSpec((realdata.BATCH,), tf.int32),
        )
        return plain_from_generator(ctx.source(), signature)
    source = ctx.source()

    def examples() -> Any:
        for i in range(len(source)):
            yield source[i]

    example = (tf.TensorSpec((None,), tf.int32), tf.TensorSpec((), tf.int32))
    return _bucketed(ctx, tf.data.Dataset.from_generator(examples, output_signature=example))


def _bucketed(ctx: Context, dataset: Any) -> Any:
    import tensorflow as tf

    sizes = [realdata.BATCH] * (len(ctx.boundaries) + 1)
    by_length = dataset.bucket_by_sequence_length(lambda ids, _: tf.shape(ids)[0], ctx.boundaries, sizes)
    return by_length.prefetch(tf.data.AUTOTUNE)


def _keras(ctx: Context, processes: bool) -> Any:
    """Keras's own PyDataset workers, read the way ``fit`` reads a PyDataset on the TensorFlow backend: Keras's
    adapter and its tf.data dataset."""
    import realkeras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    workers: dict[str, Any] = {"workers": PEERS, "use_multiprocessing": processes}
    if ctx.workload == "images":
        dataset = realkeras.JpegBatches(ctx.paths, **workers)
    else:
        dataset = realkeras.SentenceBatches(ctx.corpus, **workers)
    return PyDatasetAdapter(dataset, shuffle=False).get_tf_dataset()


def _grain(ctx: Context) -> Any:
    """A grain MapDataset (per item: the same function, batched by 32) prefetched by 2 worker processes, read the
    way ``fit`` reads a grain dataset on the TensorFlow backend: Keras's grain adapter (it takes a few batches
    for the signature), its tf.data dataset."""
    import grain  # type: ignore[import-untyped]
    from keras.src.trainers.data_adapters.grain_dataset_adapter import GrainDatasetAdapter

    items = grain.MapDataset.range(realdata.LENGTH * realdata.BATCH)
    if ctx.workload == "images":
        batches = items.map(realdata.LoadImage(ctx.paths)).batch(realdata.BATCH)
    else:
        batches = items.map(realdata.Tokenize(ctx.corpus)).batch(realdata.BATCH, batch_fn=realdata.pad_examples)
    prefetched = batches.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=PEERS))
    return GrainDatasetAdapter(prefetched).get_tf_dataset()


def _native_images(ctx: Context) -> Any:
    """The tf.data route: TensorFlow's own decode, crop and flip in a parallel map over the file names."""
    import tensorflow as tf

    def load(path: Any, label: Any) -> Any:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.random_crop(image, (realdata.CROP, realdata.CROP, 3))
        image = tf.image.random_flip_left_right(image)
        return tf.cast(image, tf.float32) * (1 / 127.5) - 1.0, label

    labels = tf.constant([realdata.image_label(i) for i in range(len(ctx.paths))], tf.int32)
    files = tf.data.Dataset.from_tensor_slices((ctx.paths, labels)).repeat()
    return files.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(realdata.BATCH).prefetch(tf.data.AUTOTUNE)


def _pretokenised(ctx: Context) -> Any:
    """The same tokens made beforehand, held in memory and bucketed by tf.data alone (no Python per batch)."""
    import numpy as np
    import tensorflow as tf

    rows = [ctx.corpus.example(i) for i in range(len(ctx.corpus.sentences))]
    ids = tf.constant(np.concatenate([r[0] for r in rows]))
    ends = np.cumsum([len(r[0]) for r in rows])
    starts, ends = tf.constant(ends - [len(r[0]) for r in rows]), tf.constant(ends)
    labels = tf.constant([r[1] for r in rows], tf.int32)

    def example(i: Any) -> Any:
        return ids[starts[i] : ends[i]], labels[i]

    rows_ds = tf.data.Dataset.range(len(rows)).repeat().map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return _bucketed(ctx, rows_ds)


def methods(workload: str, cores: int) -> list[tuple[str, str, Callable[[Context], Any]]]:
    """(name, group, build) of every method of ``workload``; group is tfbridge | peer | ceiling; ``build(ctx)``
    makes a fresh dataset."""
    rows: list[tuple[str, str, Callable[[Context], Any]]] = [
        ("tfbridge auto (no arguments)", "tfbridge", lambda c: _tfbridge(c)),
        ("tfbridge serial", "tfbridge", lambda c: _tfbridge(c, executor="serial")),
        (f"tfbridge thread x{cores}", "tfbridge", lambda c: _tfbridge(c, executor="thread", workers=cores)),
        (f"tfbridge process x{cores}", "tfbridge", lambda c: _tfbridge(c, executor="process", workers=cores)),
    ]
    if workload == "text":
        name = "tfbridge auto on the Keras PyDataset (batches padded in __getitem__)"
        rows.append((name, "tfbridge", _tfbridge_batches))
    rows += [
        ("plain from_generator" + (" + bucket_by_sequence_length" if workload == "text" else ""), "peer", _plain),
        (f"Keras PyDataset, {PEERS} threads", "peer", lambda c: _keras(c, processes=False)),
        (f"Keras PyDataset, {PEERS} processes", "peer", lambda c: _keras(c, processes=True)),
        (f"grain mp_prefetch, {PEERS} workers", "peer", _grain),
    ]
    if workload == "images":
        rows.append(("native tf.data: decode_jpeg + crop/flip, AUTOTUNE map", "ceiling", _native_images))
    else:
        rows.append(("tf.data alone: the tokens made beforehand, same bucketing", "ceiling", _pretokenised))
    return rows


def _warm_tensorflow() -> None:
    """TensorFlow's one-time start (runtime, from_generator's machinery) before anything is timed."""
    import tensorflow as tf

    for dataset in (tf.data.Dataset.range(2), tf.data.Dataset.from_generator(lambda: iter([1, 2]), tf.int64)):
        list(dataset.batch(2))


def _puller() -> Callable[[Any, int], None]:
    """``pull(iterator, n)``: n batches taken by a compiled loop (as a training step takes them)."""
    import tensorflow as tf

    def loop(iterator: Any, n: Any) -> Any:
        i = tf.constant(0)
        while i < n:
            iterator.get_next()
            i += 1
        return i

    compiled = tf.function(loop)
    return lambda iterator, n: compiled(iterator, tf.constant(n))


def check_batch(workload: str, batch: Any) -> None:
    """Every method of a workload gives batches of one structure: (features, labels), 32 rows each, float32
    images 224x224x3 or int32 token ids padded to a length; integer labels."""
    import numpy as np

    x, y = (np.asarray(t) for t in batch)
    want = (realdata.BATCH, realdata.CROP, realdata.CROP, 3) if workload == "images" else (realdata.BATCH, x.shape[-1])
    dtype = np.float32 if workload == "images" else np.int32
    if x.shape != want or x.dtype != dtype or y.shape != (realdata.BATCH,) or y.dtype.kind != "i":
        msg = (
            f"the first batch is not the workload's: features {x.dtype}{list(x.shape)}, labels {y.dtype}{list(y.shape)}"
        )
        raise AssertionError(msg)


def time_method(make: Callable[[], Any], sizes: Sizes, workload: str) -> dict[str, Any]:
    """``sizes.repeats`` fresh pipelines: seconds to the first batch, then batches/s over the timed window."""
    pull = _puller()
    firsts: list[float] = []
    rates: list[float] = []
    for _ in range(sizes.repeats):
        gc.collect()
        start = time.perf_counter()
        dataset = make()
        iterator = iter(dataset)
        first = next(iterator)
        firsts.append(time.perf_counter() - start)
        check_batch(workload, first)
        pull(iterator, sizes.warmup)  # traces the loop on the first repetition, fills the queues
        count, step, began = 0, 1, time.perf_counter()
        while True:
            t0 = time.perf_counter()
            pull(iterator, step)
            count += step
            elapsed = time.perf_counter() - began
            if elapsed >= sizes.window_s and count >= sizes.min_batches:
                break
            step = max(1, min(step * 2, int(step * 0.25 / max(time.perf_counter() - t0, 1e-6)) or 1))
        rates.append(count / elapsed)
        del iterator, dataset
        gc.collect()
    return {"first_batch_s": firsts, "rates": rates}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(workload: str, name: str, data: str, sizes: Sizes) -> dict[str, Any]:
    """One method in this interpreter (started by :func:`run_method`)."""
    import keras  # noqa: F401  (every method's libraries are imported before anything is timed)
    import realkeras  # noqa: F401

    from tfbridge import executors

    if "grain" in name:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags; a script without absl.app parses none
            flags.FLAGS.mark_as_parsed()
    if "grain" in name:
        import grain  # noqa: F401
    _warm_tensorflow()
    ctx = Context(workload, data, sizes)
    build = next(f for n, _, f in methods(workload, ctx.cores) if n == name)
    out: dict[str, Any] = {"baseline_rss_mb": _rss_mb()}
    choices: list[tuple[Any, float]] = []
    choose = executors.choose

    def recording(cost: Any, *args: Any, **kwargs: Any) -> Any:
        """What auto chose in each repetition, and what its peek took (the choice depends on the machine's load)."""
        choice = choose(cost, *args, **kwargs)
        choices.append((choice, cost.wall_s))
        return choice

    executors.choose = recording
    try:
        out.update(time_method(lambda: build(ctx), sizes, workload))
    except Exception as exc:  # a method that fails is reported, not hidden
        out["error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    finally:
        executors.choose = choose
    if name.startswith("tfbridge auto") and choices:
        out["peek_s"] = statistics.median(wall for _, wall in choices)
        out["auto"] = [f"{c.name} x{c.workers}: {c.reason}" for c, _ in choices]
    return out


# -- the parent: one interpreter per method, its memory sampled ---------------------------------------------------


_SAMPLE_S = 0.2  # resident memory (cheap to read) this often
_RESCAN_S = 1.0  # the session's processes listed again, and PSS read at most, this often: reading PSS walks every
# mapping of a process (about 30 ms for one with TensorFlow loaded), too costly to do often on 2 shared cores


def _session_pids(session: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[3]) == session:
                pids.append(int(name))
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return pids


def _rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _pss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:")), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


class MemorySampler:
    """Peak memory of every process of a session: the sum of RSS every ``_SAMPLE_S``; the sum of PSS when the
    RSS sum reaches a new peak (at most every ``_RESCAN_S``)."""

    def __init__(self, session: int) -> None:
        self.session = session
        self.pids: list[int] = []
        self.scanned = self.pss_read = float("-inf")
        self.peak_rss = self.peak_pss = 0.0
        self.peak_processes = 0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.scanned >= _RESCAN_S:
            self.pids, self.scanned = _session_pids(self.session), now
        sizes = [_rss_of(pid) for pid in self.pids]
        rss = sum(sizes)
        self.peak_processes = max(self.peak_processes, sum(1 for size in sizes if size))
        if rss > self.peak_rss:
            self.peak_rss = rss
            if now - self.pss_read >= _RESCAN_S:
                self.peak_pss = max(self.peak_pss, sum(_pss_of(pid) for pid in self.pids))
                self.pss_read = now


@dataclass
class Result:
    workload: str
    name: str
    group: str
    rates: list[float] = field(default_factory=list)
    first_batch_s: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    peak_processes: int = 0
    baseline_rss_mb: float = 0.0
    error: str | None = None
    auto: list[str] = field(default_factory=list)  # what auto chose in each repetition, and why
    peek_s: float = float("nan")

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def chose(self) -> str:
        """What auto chose: one executor, or each one with the repetitions that chose it."""
        names = [a.split(":")[0] for a in self.auto]
        distinct = sorted(set(names), key=names.index)
        if len(distinct) == 1:
            return distinct[0]
        return ", ".join(f"{n} ({names.count(n)} of {len(names)} repetitions)" for n in distinct) or "?"

    @property
    def first(self) -> float:
        return statistics.median(self.first_batch_s) if self.first_batch_s else float("nan")


def run_method(workload: str, name: str, group: str, data: str, sizes: Sizes, quick: bool) -> Result:
    """``name`` in a fresh interpreter of its own session, its processes' memory sampled meanwhile."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", workload, name, "--data", data]
    if quick:
        command.append("--quick")
    result = Result(workload, name, group)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    done = threading.Event()
    memory = MemorySampler(proc.pid)

    def sample() -> None:
        while not done.wait(_SAMPLE_S):
            memory.tick()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=sizes.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        result.error = f"timed out after {sizes.timeout_s:.0f} s"
    finally:
        done.set()
        sampler.join()
        result.peak_rss_mb, result.peak_pss_mb = memory.peak_rss, memory.peak_pss
        result.peak_processes = memory.peak_processes
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # worker processes the method left behind, if any
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        result.error = result.error or "no result: " + (stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        return result
    figures = json.loads(lines[-1][len(RESULT) :])
    result.rates, result.first_batch_s = figures.get("rates", []), figures.get("first_batch_s", [])
    result.baseline_rss_mb = figures.get("baseline_rss_mb", 0.0)
    result.error, result.auto = figures.get("error"), figures.get("auto", [])
    result.peek_s = figures.get("peek_s", float("nan"))
    return result


def run(sizes: Sizes, quick: bool, workloads: tuple[str, ...] = WORKLOADS) -> tuple[list[Result], float]:
    from tfbridge import executors

    started = time.perf_counter()
    data = tempfile.mkdtemp(prefix="tfbridge-bench-jpegs-")
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        realdata.write_jpegs(data, sizes.jpegs)
        results = []
        for workload in workloads:
            print(f"\n{TITLE[3:]}: {workload}", flush=True)
            for name, group, _ in methods(workload, executors.cores()):
                r = run_method(workload, name, group, data, sizes, quick)
                results.append(r)
                if r.error:
                    print(f"  {name:56s} failed: {r.error}", flush=True)
                    continue
                print(f"  {name:56s} {r.rate:8.1f} batches/s [{min(r.rates):.1f} .. {max(r.rates):.1f}]  first batch "
                      f"{r.first:6.2f} s  peak RSS {r.peak_rss_mb:6.0f} MB (PSS {r.peak_pss_mb:.0f}, "
                      f"{r.peak_processes} processes)", flush=True)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(data, ignore_errors=True)
    return results, time.perf_counter() - started


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM: unwind (the running method's processes are killed, the JPEG directory removed) and exit."""
    sys.exit(128 + signum)


# -- the section --------------------------------------------------------------------------------------------------


def _of(results: list[Result], workload: str) -> list[Result]:
    return [r for r in results if r.workload == workload]


def goals(results: list[Result]) -> list[tuple[str, str, str, str]]:
    """(goal, figures, met, why) for tfbridge auto against the best peer, and (a) against native tf.data."""
    out = []
    for workload, label in (("images", "(a) images"), ("text", "(b) text")):
        rows = _of(results, workload)
        if not rows:
            continue
        auto = next(r for r in rows if r.name.startswith("tfbridge auto"))
        peers = [r for r in rows if r.group == "peer" and not r.error]
        if auto.error or not peers:
            out.append((f"{label}: tfbridge auto vs the best peer", "", "NO", auto.error or "no peer ran"))
            continue
        best = max(peers, key=lambda r: r.rate)
        quickest = min(peers, key=lambda r: r.first)
        executors = [r for r in rows if r.group == "tfbridge" and not r.error and r is not auto]
        best_tb = max(executors, key=lambda r: r.rate) if executors else auto
        ratio = auto.rate / best.rate
        out.append((
            f"{label}, steady state: tfbridge auto >= the best peer ({best.name})",
            f"{auto.rate:.1f} vs {best.rate:.1f} batches/s = {ratio:.2f}x",
            "yes" if ratio >= 1.0 else "NO",
            f"auto chose {auto.chose}; the fastest tfbridge executor here: {best_tb.name}, {best_tb.rate:.1f} "
            f"batches/s ({best_tb.rate / best.rate:.2f}x the best peer)",
        ))  # fmt: skip
        started = ""
        if "process" in auto.chose:
            started = (
                "; its worker processes (fresh interpreters, started as the pipeline is built) then import the "
                "source's modules before the first element"
            )
        elif "thread x" in auto.chose:
            started = f"; then {auto.chose.split()[1][1:]} threads started as many batches at once"
        else:
            started = "; then the pipeline's tf.data steps are traced and the first batch made, in this process"
        out.append((
            f"{label}, first batch: tfbridge auto < the best peer ({best.name})",
            f"{auto.first:.2f} s vs {best.first:.2f} s",
            "yes" if auto.first < best.first else "NO",
            f"auto's peek (8 elements made one after another, to infer the spec and time them) took {auto.peek_s:.2f}"
            f" s before the pipeline was built (big elements: the first is made twice more, to time it again, not "
            f"counted here){started}; the quickest peer to a first batch: {quickest.name}, "
            f"{quickest.first:.2f} s",
        ))  # fmt: skip
        if workload == "images":
            native = next(r for r in rows if r.group == "ceiling")
            share = auto.rate / native.rate if not native.error else float("nan")
            out.append((
                "(a) images, steady state: tfbridge auto >= 0.9 x native tf.data",
                f"{auto.rate:.1f} vs {native.rate:.1f} batches/s = {share:.2f}x",
                "yes" if share >= 0.9 else "NO",
                f"the native route decodes with TensorFlow's own ops in C++ threads (no GIL, no Python per image); "
                f"the fastest tfbridge executor reaches {best_tb.rate / native.rate:.2f}x of it",
            ))  # fmt: skip
    return out


def _versions() -> str:
    from importlib.metadata import version

    import keras
    import PIL
    import tensorflow as tf

    import tfbridge as tb

    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, grain {version('grain')}, Pillow {PIL.__version__}, "
        f"tfbridge {tb.__version__}"
    )


def section(sizes: Sizes | None = None, quick: bool | None = None, workloads: tuple[str, ...] = WORKLOADS) -> str:
    quick = quick_mode() if quick is None else quick
    sizes = sizes or (Sizes.quick() if quick else Sizes())
    results, seconds = run(sizes, quick, workloads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/real.py on {dt.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, {_versions()}. Each method in a fresh interpreter of its own; "
        f"{sizes.repeats} repetitions, each a fresh pipeline: the time to the first batch (from the call that builds "
        f"the dataset to the first batch in hand), then {sizes.warmup} batches of warm-up and a timed window of at "
        f"least {sizes.window_s:g} s and {sizes.min_batches} batches, pulled by a compiled TensorFlow loop as "
        "training pulls them. Figures: batches of 32 per second and seconds to the first batch, median [min .. max]; "
        "peak memory is the largest sum over the method's interpreter and all its worker processes, RSS sampled "
        f"every {_SAMPLE_S:g} s over all repetitions and PSS read when that sum reached a new peak (at most every "
        f"{_RESCAN_S:g} s): RSS counts pages shared between processes once per process, PSS divides them; "
        "the interpreter alone, with TensorFlow, Keras and the data loaded, holds the baseline shown by each table. "
        "Section run: "
        f"{seconds / 60:.1f} min; load average at the end: {load} (the machine was shared with other work: "
        "compare ratios within this run, not absolute figures). Command: `python benchmarks/real.py`"
        + (" --quick" if quick else "")
        + ".",
        "",
        f"(a) images: a `keras.utils.PyDataset` whose `__getitem__` decodes 32 JPEGs ({realdata.SIDE}x{realdata.SIDE}, "
        f"{sizes.jpegs} files written once to a temporary directory, read in a cycle) with Pillow, crops a random "
        f"{realdata.CROP}x{realdata.CROP} window, flips half of them and scales to float32 in [-1, 1] "
        "(float32[32,224,224,3] + int32 labels, 19 MB a batch). tfbridge, `from_generator` and Keras read that "
        "PyDataset; grain maps the same per-image function over `MapDataset.range(...)` and batches by 32; the "
        "native route is `decode_jpeg`, `random_crop`, `random_flip_left_right` in `map(num_parallel_calls=AUTOTUNE)`"
        " over the file names. (b) text: "
        f"{sizes.sentences:,} sentences of made-up words (lengths lognormal, median 16 words), tokenised on every "
        "call in pure Python (accents stripped character by character, words and punctuation split, word pieces "
        "for words outside a 3,000-word vocabulary; about 25 tokens a sentence). tfbridge takes an indexed source "
        f"of single examples, `tb.pad_batch(source, 32, buckets=boundaries)` ({sizes.buckets} buckets, the "
        "boundaries given, from `tb.bucket_boundaries` over the corpus's lengths, so that no pass over the lengths "
        "comes first); `from_generator` over the same examples is bucketed by `bucket_by_sequence_length` with the "
        "same boundaries; a Keras PyDataset, as Keras users write it, tokenises 32 sentences per `__getitem__` and "
        "pads them to the longest (tfbridge is given that PyDataset too, in the last tfbridge row); grain maps the "
        "tokeniser and batches with a padding `batch_fn`. The last row is tf.data alone: the same tokens made "
        "beforehand, held in memory (one flat tensor, sliced per example) and bucketed the same way, which bounds "
        "every route that buckets single examples in tf.data. (c) HuggingFace datasets: "
        "the section *HuggingFace datasets* of this file (benchmarks/hf.py, run by the same `make bench`).",
        "",
        "How the routes work, which the figures below reflect. tfbridge reads 8 elements one after another (the "
        "peek) before it builds anything, to infer the spec and time them; `auto` then picks its executor from "
        "their cost: elements whose CPU time is under half their wall time count as waiting (threads, up to 64 of "
        "them, each holding an element in flight), CPU-bound elements that pickle (and are not mostly memory "
        "copying) get one worker process per core when they repay their start-up within the first epoch; the time "
        "an element spends waiting for a core on a busy machine is measured and left out. tfbridge's worker "
        "processes are fresh interpreters, started (in a thread) as soon as the dataset is built, so that their "
        "start overlaps the rest of the build; a Keras PyDataset travels to them as a light copy that needs neither "
        "Keras nor TensorFlow (the user's classes over a stand-in base), so each starts in well under a second; "
        "Keras's own "
        "processes are forked from the running interpreter (Python's default start on Linux) and start at once, "
        "but every batch comes back pickled through a pipe (19 MB an image batch). grain's `mp_prefetch` spawns "
        "fresh interpreters too, and Keras's grain adapter iterates the dataset once for a few batches (the "
        "signature) before the iteration that feeds tf.data, so the workers start twice. tfbridge's `pad_batch` "
        "with buckets over a Python source buckets and pads where the examples are made, and each step into "
        "tf.data carries one padded batch; the examples themselves are made one per call of the source (`auto` "
        "picks the serial executor here: worker processes, sent the examples in groups of about 2 ms of work, make "
        "them little faster than one process, each example still seeded, checked and bucketed one by one), while "
        "a Keras PyDataset makes 32 per call. Bucketing single examples in tf.data instead has a "
        "cost per example of its own (the last row of (b)). Every method of a workload gives batches of one "
        "structure (checked on each first batch).",
        "",
        "### Goals",
        "",
        "| goal | figures | met | why |",
        "|---|---|:---:|---|",
    ]
    for goal, figure, met, why in goals(results):
        lines.append(f"| {goal} | {figure} | {met} | {why} |")
    for workload, label in (("images", "(a) JPEG images, Pillow"), ("text", "(b) text, pure-Python tokeniser")):
        rows = _of(results, workload)
        if not rows:
            continue
        auto = next(r for r in rows if r.name.startswith("tfbridge auto"))
        peers = [r.rate for r in rows if r.group == "peer" and not r.error]
        best = max(peers) if peers else float("nan")
        base = statistics.median([r.baseline_rss_mb for r in rows if r.baseline_rss_mb])
        lines += [
            "",
            f"### {label}",
            "",
            f"`auto` chose {auto.chose}: {auto.auto[0].split(': ', 1)[-1] if auto.auto else '?'}. The interpreter "
            f"alone: {base:.0f} MB RSS.",
            "",
            "| method | batches/s | spread | vs best peer | first batch (s) | spread | peak RSS (MB) | peak PSS (MB) "
            "| processes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r.error:
                lines.append(f"| {r.name} | failed | {r.error} | | | | {r.peak_rss_mb:.0f} | {r.peak_pss_mb:.0f} | |")
                continue
            lines.append(
                f"| {r.name} | {r.rate:.1f} | {min(r.rates):.1f} .. {max(r.rates):.1f} | {r.rate / best:.2f}x | "
                f"{r.first:.2f} | {min(r.first_batch_s):.2f} .. {max(r.first_batch_s):.2f} | {r.peak_rss_mb:.0f} | "
                f"{r.peak_pss_mb:.0f} | {r.peak_processes} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run that prints its section and writes nothing")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: images, text")
    args = parser.parse_args()
    quick = args.quick or quick_mode()
    sizes = Sizes.quick() if quick else Sizes()
    if args.child:
        figures = child(args.child[0], args.child[1], args.data, sizes)
        print(RESULT + json.dumps(figures), flush=True)
        return
    workloads = tuple(w.strip() for w in args.workloads.split(","))
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    text = section(sizes, quick, workloads)
    if not quick and workloads == WORKLOADS:
        from hf import write_section

        write_section(text, title=TITLE)
    print("\n" + text)


if __name__ == "__main__":
    main()

"""Resuming: the index-driven route against the `from_generator` route it replaced, for `make bench`.

Datasets of indexed sources and streams now enter tf.data by the index-driven route
(src/tfbridge/sources/_positions.py): a pass's position lives in tf.data's state, so
`tf.train.Checkpoint(iterator=iter(ds))` saves where an iterator stands and restores it, in another process too.
The old route (`from_generator`) stays selectable with the private flag `tfbridge.sources._python.POSITIONED =
False`, read when a dataset is made. This section measures, in one run:

1. Throughput of both routes on the workloads W1-W4 of benchmarks/workloads.py (`tb.to_dataset(source)`, default
   `executor="auto"`), on a 20,000-element stream of small elements (a generator function) and on a 20,000-element
   indexed source of small elements (chunked; serial executor). Each repetition makes a fresh dataset, takes 8
   elements of warm-up, then times a window pulled by a compiled TensorFlow loop (src/tfbridge/_bench.py, as
   benchmarks/run.py). The two routes alternate (ABBA) so that drift on the machine hits both.
2. Checkpoints of an iterator over `tb.to_dataset(source, shuffle=True, seed=1, batch_size=...)` for a source of
   10**6 small elements (int64 scalar + float32[8]) and one of 2,000 big ones (float32 arrays of 1 MB): bytes of
   the checkpoint files saved after the first batch, in the middle, before the last batch and after it; time of
   `Checkpoint.read` plus the first batch after it, in a fresh iterator (in this process; for the middle, also in
   a fresh subprocess). Every restore must give exactly the batch the uninterrupted iterator gave next.
3. The end of an epoch on the index-driven route (and on `from_generator`, for comparison): milliseconds from
   the last element to the end of the pass, measured by benchmarks/epoch_end.py's own functions.

`python benchmarks/resume.py` prints the section and writes it into RESULTS.md; `--quick` runs it small and
only prints.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import epoch_end  # noqa: E402
import numpy as np  # noqa: E402
import workloads  # noqa: E402
from hf import write_section  # noqa: E402

import tfbridge as tb  # noqa: E402
from tfbridge._bench import measure  # noqa: E402
from tfbridge.errors import TfBridgeWarning  # noqa: E402
from tfbridge.sources import _python  # noqa: E402

TITLE = "## Resuming: the index-driven route"
ROUTES = (("index-driven", True), ("from_generator", False))
TOLERANCE = 0.95  # the goal: the index-driven route within 5% of from_generator
STREAM_N = 20_000
BIG_FLOATS = 262_144  # float32: 1 MB


# -- sources ---------------------------------------------------------------------------------------------------
def small_stream() -> Iterator[Any]:
    """A generator function: 20,000 small elements, an int64 scalar and a float32[8] each."""
    for i in range(STREAM_N):
        yield np.int64(i), np.full((8,), i % 1000, np.float32)


class SmallRows:
    """``n`` small elements (an int64 scalar and a float32[8] each), cheap to make; the floats are random rows of a
    table (what a checkpoint holds is not flattered by compression)."""

    TABLE = np.random.default_rng(0).random((4096, 8), dtype=np.float32)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.int64(i), self.TABLE[i % 4096].copy()


class BigRows:
    """``n`` big elements: float32 arrays of 1 MB, random (seeded by the index: the same in every process)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.random.default_rng(i).random(BIG_FLOATS, dtype=np.float32)


@contextlib.contextmanager
def route(positioned: bool) -> Iterator[None]:
    """Datasets made inside take the index-driven route (True) or from_generator (False)."""
    before = _python.POSITIONED
    _python.POSITIONED = positioned
    try:
        yield
    finally:
        _python.POSITIONED = before


def _made(make: Callable[[], Any], positioned: bool) -> Callable[[], Any]:
    def build() -> Any:
        with route(positioned):
            return make()

    return build


def _picks(source: Any, **kwargs: Any) -> str:
    """The executor ``executor="auto"`` picks for ``source`` (without the warnings inspecting may give)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TfBridgeWarning)
        choice = tb.inspect(source, **kwargs).executor
    return f"{choice['name']} x{choice['workers']}"


# -- 1. throughput -----------------------------------------------------------------------------------------------
def throughput_cases() -> list[tuple[str, Any, Callable[[Any], Any]]]:
    """(name, source, dataset factory of the source)."""
    cases: list[tuple[str, Any, Callable[[Any], Any]]] = [
        (w.title.split(":")[0], w(), lambda s: tb.to_dataset(s)) for w in workloads.WORKLOADS
    ]
    cases += [
        (f"stream of {STREAM_N:,} small elements", small_stream, lambda s: tb.to_dataset(s, batched=False)),
        (
            f"indexed, {STREAM_N:,} small elements (chunked), serial",
            SmallRows(STREAM_N),
            lambda s: tb.to_dataset(s, batched=False, executor="serial"),
        ),
    ]
    return cases


def throughput(repeats: int, window_s: float) -> list[dict[str, Any]]:
    rows = []
    for name, source, make in throughput_cases():
        picks = _picks(source) if hasattr(source, "__len__") else ""
        print(f"  {name} ({picks or 'stream'})", flush=True)
        rates: dict[str, list[float]] = {r: [] for r, _ in ROUTES}
        errors: dict[str, str] = {}
        for k in range(repeats):
            order = ROUTES if k % 2 == 0 else ROUTES[::-1]
            for label, positioned in order:
                m = measure(
                    label,
                    _made(lambda make=make, source=source: make(source), positioned),  # type: ignore[misc]
                    repeats=1,
                    warmup=8,
                    window_s=window_s,
                    min_elements=24,
                )
                gc.collect()
                if m.error:
                    errors[label] = m.error
                rates[label] += m.rates
        row: dict[str, Any] = {"name": name, "picks": picks, "rates": rates, "errors": errors}
        for label, _ in ROUTES:
            got = rates[label]
            text = " ".join(f"{r:.1f}" for r in got)
            print(f"    {label:15s} median {statistics.median(got) if got else float('nan'):10.1f}/s  ({text})"
                  f"{'  ' + errors[label] if label in errors else ''}", flush=True)  # fmt: skip
        rows.append(row)
    return rows


# -- 2. checkpoints ------------------------------------------------------------------------------------------------
def checkpoint_cases(quick: bool) -> list[dict[str, Any]]:
    small_n, big_n = (100_000, 200) if quick else (1_000_000, 2_000)
    return [
        {"kind": "small", "n": small_n, "batch_size": 32, "what": f"{small_n:,} small elements (int64 + float32[8])"},
        {"kind": "big", "n": big_n, "batch_size": 8, "what": f"{big_n:,} big elements (float32[{BIG_FLOATS}], 1 MB)"},
    ]


def checkpoint_dataset(kind: str, n: int, batch_size: int) -> Any:
    source = SmallRows(n) if kind == "small" else BigRows(n)
    return tb.to_dataset(source, batched=False, shuffle=True, seed=1, batch_size=batch_size)


def _puller() -> Any:
    import tensorflow as tf

    def pull(iterator: Any, n: Any) -> Any:
        i = tf.constant(0)
        while i < n:
            iterator.get_next()
            i += 1
        return i

    return tf.function(pull)


def _next_batch(iterator: Any) -> list[np.ndarray] | None:
    """The iterator's next batch as numpy leaves; None at the end of the pass."""
    import tensorflow as tf

    try:
        batch = next(iterator)
    except StopIteration:
        return None
    return [t.numpy() for t in tf.nest.flatten(batch)]


def _same(a: list[np.ndarray] | None, b: list[np.ndarray] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _files_bytes(prefix: str) -> int:
    folder, stem = os.path.split(prefix)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(stem + "."))


def restore_once(dataset: Any, path: str) -> tuple[float, list[np.ndarray] | None]:
    """(seconds of Checkpoint.read plus the first batch, that batch) in a fresh iterator over ``dataset``."""
    import tensorflow as tf

    iterator = iter(dataset)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    start = time.perf_counter()
    checkpoint.read(path).assert_consumed()
    batch = _next_batch(iterator)
    return time.perf_counter() - start, batch


def _save_ref(path: str, batch: list[np.ndarray] | None) -> str:
    ref = path + ".ref.npz"
    np.savez(ref, *([] if batch is None else batch), end=np.asarray(batch is None))
    return ref


def _load_ref(ref: str) -> list[np.ndarray] | None:
    with np.load(ref) as z:
        if bool(z["end"]):
            return None
        return [z[f"arr_{k}"] for k in range(len(z.files) - 1)]


def restore_in_subprocess(case: dict[str, Any], path: str, ref: str) -> dict[str, Any]:
    """Restore in a fresh Python process: it imports TensorFlow, makes the same dataset, reads the checkpoint and
    takes the first batch, which must equal ``ref``."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({**case, "path": path, "ref": ref})]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        msg = f"the restoring subprocess failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        raise RuntimeError(msg)
    out = json.loads(lines[-1])
    assert out["same"], "the batch restored in a subprocess differs from the uninterrupted next batch"
    return {**out, "wall_s": wall}


def child(arguments: str) -> None:
    """The restoring subprocess (``--child``): prints one JSON line."""
    started = time.perf_counter()
    case = json.loads(arguments)
    dataset = checkpoint_dataset(case["kind"], case["n"], case["batch_size"])
    built = time.perf_counter()
    seconds, batch = restore_once(dataset, case["path"])
    out = {"build_s": built - started, "read_first_s": seconds, "same": _same(batch, _load_ref(case["ref"]))}
    print(json.dumps(out), flush=True)


def checkpoints(repeats: int, quick: bool, folder: str) -> list[dict[str, Any]]:
    pull = _puller()
    import tensorflow as tf

    out = []
    for case in checkpoint_cases(quick):
        n, size = case["n"], case["batch_size"]
        batches = -(-n // size)
        dataset = checkpoint_dataset(case["kind"], n, size)
        choice = _picks(SmallRows(n) if case["kind"] == "small" else BigRows(n), batched=False)
        case = {**case, "picks": choice, "batches": batches}
        print(f"  {case['what']}, batch_size={size} ({batches:,} batches; auto picks {case['picks']})", flush=True)
        positions = [
            ("start: after batch 1", 1),
            (f"middle: after batch {batches // 2:,}", batches // 2),
            (f"end: after batch {batches - 1:,} (the last to come)", batches - 1),
            (f"done: after the last batch ({batches:,})", batches),
        ]
        iterator = iter(dataset)
        saver = tf.train.Checkpoint(iterator=iterator)
        taken, saved = 0, []
        started = time.perf_counter()
        for k, (label, at) in enumerate(positions):
            if at > taken:
                pull(iterator, tf.constant(at - taken))
                taken = at
            path = saver.write(os.path.join(folder, f"{case['kind']}{k}"))
            reference = _next_batch(iterator)  # what the uninterrupted iterator gives next
            taken += reference is not None
            saved.append((label, path, reference))
        pass_s = time.perf_counter() - started
        del iterator, saver
        rows = []
        for k, (label, path, reference) in enumerate(saved):
            times = []
            for _ in range(repeats):
                seconds, batch = restore_once(dataset, path)
                assert _same(batch, reference), f"{case['what']}, {label}: the restored batch is not the next one"
                times.append(seconds)
                gc.collect()
            row = {"position": label, "bytes": _files_bytes(path), "restore_s": times, "sub": None}
            if k == 1:  # the middle: also in a fresh process
                row["sub"] = restore_in_subprocess(case, path, _save_ref(path, reference))
            sub = row["sub"]
            print(
                f"    {label:45s} {row['bytes'] / 1e6:9.3f} MB  restore + first batch "
                f"{statistics.median(times) * 1e3:8.1f} ms"
                + (f"; subprocess {sub['read_first_s'] * 1e3:.1f} ms ({sub['wall_s']:.1f} s in all)" if sub else ""),
                flush=True,
            )
            rows.append(row)
        out.append({**case, "rows": rows, "pass_s": pass_s})
        del dataset
        gc.collect()
    return out


# -- 3. end of an epoch ----------------------------------------------------------------------------------------
def epoch_end_routes() -> list[tuple[str, Callable[[], Any]]]:
    buckets = ", ".join(str(b) for b in epoch_end.BOUNDARIES)
    return [
        (f"stream, pad_batch(32, buckets=[{buckets}])", lambda: tb.pad_batch(epoch_end.stream, 32,
                                                                              buckets=epoch_end.BOUNDARIES)),
        ("indexed source, to_dataset (serial)",
         lambda: tb.to_dataset(epoch_end.Rows(), batched=False, executor="serial")),
    ]  # fmt: skip


def epoch_ends(epochs: int) -> list[tuple[str, str, list[tuple[float, float]]]]:
    out = []
    for name, make in epoch_end_routes():
        for label, positioned in ROUTES:
            times = epoch_end.compiled_epochs(_made(make, positioned)(), epochs, 0)
            gaps = " ".join(f"{g:.0f}" for _, g in times)
            print(f"  {name:45s} {label:15s} last element at {statistics.median(t for t, _ in times):.2f} s; "
                  f"end +ms: {gaps}", flush=True)  # fmt: skip
            out.append((name, label, times))
            gc.collect()
    return out


# -- the section ---------------------------------------------------------------------------------------------
def _spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "failed"
    return (
        f"{statistics.median(values) * scale:.{digits}f} [{min(values) * scale:.{digits}f} .. "
        f"{max(values) * scale:.{digits}f}]"
    )


def _throughput_lines(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    lines = [
        "| workload | auto picks | index-driven, elements/s | from_generator, elements/s | index-driven / "
        "from_generator (medians) | per repetition | within 5% |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    missed = []
    for row in rows:
        new, old = row["rates"]["index-driven"], row["rates"]["from_generator"]
        if new and old:
            ratio = statistics.median(new) / statistics.median(old)
            met = "yes" if ratio >= TOLERANCE else "NO"
            if ratio < TOLERANCE:
                missed.append(f"{row['name']} ({ratio:.2f})")
            ratio_text = f"{ratio:.2f}"
            paired = _spread([a / b for a, b in zip(new, old, strict=False)], digits=2)
        else:
            ratio_text, paired, met = "-", "-", "-"
        picks = row["picks"] or "(a stream: read in order)"
        lines.append(f"| {row['name']} | {picks} | {_spread(new)} | {_spread(old)} | {ratio_text} | {paired} | {met} |")
        for label, error in row["errors"].items():
            lines.append(f"| {row['name']}: {label} failed | | {error} | | | | |")
    return lines, missed


def section(repeats: int = 3, quick: bool = False) -> str:
    import tensorflow as tf

    window_s = 0.5 if quick else 3.0
    epochs = 3 if quick else 10
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"\n{TITLE[3:]}\n\nThroughput, index-driven against from_generator", flush=True)
    speed = throughput(repeats, window_s)
    print("\nCheckpoints: size and restore time", flush=True)
    with tempfile.TemporaryDirectory(prefix="tfbridge-resume-") as folder:
        saved = checkpoints(repeats, quick, folder)
    print("\nEnd of an epoch", flush=True)
    ends = epoch_ends(epochs)
    seconds = time.perf_counter() - started
    load = (load_before + os.getloadavg()[0]) / 2
    command = "python benchmarks/resume.py" + (" --quick" if quick else "") + f" --repeats {repeats}"
    lines = [
        TITLE,
        "",
        f"Written by benchmarks/resume.py on {dt.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, tfbridge {tb.__version__}. "
        f"Load average during the run: about {load:.1f} on {os.cpu_count()} cores. Section run: "
        f"{seconds / 60:.1f} min. Command: `{command}`.",
        "",
        "### Throughput: the index-driven route against from_generator",
        "",
        f"`tb.to_dataset(source)` made with `tfbridge.sources._python.POSITIONED` True (index-driven) or False "
        f"(from_generator), in the same process. Each route {repeats} time{'s' if repeats > 1 else ''}, alternating "
        "(ABBA); each time a fresh "
        f"dataset, 8 elements of warm-up, then a window of at least {window_s:g} s pulled by a compiled TensorFlow "
        "loop (a pass that ends inside the window is timed over whole passes, each from a fresh iterator: the "
        "20,000-element rows include each pass's start). Elements (for W1-W4, batches) per second: median [min .. "
        "max]. Ratios: of the two medians, and per repetition (the two runs side by side in one ABBA half): median "
        "[min .. max]. Goal: index-driven / from_generator at 0.95 or above (judged on the medians).",
        "",
    ]
    table, missed = _throughput_lines(speed)
    lines += table
    lines += [
        "",
        "### Checkpoints: size and restore time",
        "",
        "An iterator over `tb.to_dataset(source, shuffle=True, seed=1, batch_size=...)` (index-driven route, "
        "default executor) saved with `tf.train.Checkpoint(iterator=it).write(path)` at four points of one "
        "epoch. Bytes: all the checkpoint's files. Restore: `Checkpoint(iterator=iter(ds)).read(path)` plus the "
        f"first batch, in a fresh iterator of the same dataset in this process, median [min .. max] of {repeats}; "
        "for the middle also in a fresh subprocess, which makes the same dataset (in its own time, given as "
        '"build": importing TensorFlow and making the dataset) before it reads. Every restored first batch was '
        "checked equal to the batch the uninterrupted "
        'iterator gave next (at "done": both say the pass is over).',
        "",
        "| source | saved at | checkpoint bytes | restore + first batch, ms | in a subprocess, ms (build; whole "
        "process) |",
        "|---|---|---:|---:|---:|",
    ]
    for case in saved:
        for row in case["rows"]:
            sub = row["sub"]
            sub_text = (
                f"{sub['read_first_s'] * 1e3:.1f} (build {sub['build_s']:.2f} s; {sub['wall_s']:.1f} s)" if sub else ""
            )
            lines.append(
                f"| {case['what']}, batch_size={case['batch_size']}, auto: {case['picks']} | {row['position']} | "
                f"{row['bytes']:,} | {_spread(row['restore_s'], 1e3)} | {sub_text} |"
            )
    big = saved[-1]
    big_batch = big["batch_size"] * BIG_FLOATS * 4
    middle = big["rows"][1]["bytes"]
    lines += [
        "",
        f"What a checkpoint holds: the iterator's whole tf.data state. The position of the pass is a few numbers "
        "(its epoch, nonce, seed and start, and the `scan`'s position); the rest is the elements tf.data had "
        "already taken from Python and not yet delivered: the unfinished chunk inside `flat_map`, the partial "
        "batch being assembled, and the batches waiting in the `prefetch` buffer. For small elements that is a "
        f"few kilobytes. For big elements it is whole batches: the middle checkpoint of the 1 MB source is "
        f"{middle / 1e6:.1f} MB, about {middle / big_batch:.1f} batches of {big_batch / 1e6:.1f} MB (the prefetch "
        "buffer, sized by tf.data itself, plus the batch in assembly). Restoring does not ask Python for them "
        "again; Python opens the pass at the saved position, past them. The figures are for random floats: tf.data "
        "compresses the state it saves, and in a trial run with constant-filled arrays the same checkpoints were "
        "about 20 times smaller.",
        "",
        "### End of an epoch",
        "",
        f"benchmarks/epoch_end.py's measure (`compiled_epochs`): {epochs} epochs per row, each a new call of a "
        "compiled loop; 2,000 elements of 0.3 ms each; milliseconds from the last element to the end of the "
        "pass. Datasets as tfbridge returns them (autotuning off).",
        "",
        "| route | tfbridge route | last element at (median) | end after it, ms: median | max | every epoch |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, label, times in ends:
        gaps = [g for _, g in times]
        lines.append(
            f"| {name} | {label} | {statistics.median(t for t, _ in times):.2f} s | {statistics.median(gaps):.0f} | "
            f"{max(gaps):.0f} | {' '.join(f'{g:.0f}' for g in gaps)} |"
        )
    verdict = (
        "All rows met the goal (index-driven / from_generator at 0.95 or above)."
        if not missed
        else f"Below the goal: {', '.join(missed)}."
    )
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per method (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="small and short; prints, writes nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    text = section(args.repeats or (1 if quick else 3), quick=quick)
    if not quick:
        write_section(text, title=TITLE)
    print("\n" + text)


if __name__ == "__main__":
    main()

"""`make soak`: many epochs over one process-executor pipeline with shuffle, checking that nothing drifts.

Every epoch must be a full permutation of the source (each element exactly once, content intact); the main
process's resident memory (VmRSS) and open file descriptors, and the workers' memory, are sampled after every
epoch and fitted with a least-squares line (numpy.polyfit) over the epochs after a short warm-up. At the end the
dataset is dropped and the script checks that no worker process, shared-memory slot (memfd descriptor or
mapping) or tfbridge thread is left. Prints the figures; exits 1 if anything was lost, duplicated or leaked, or a
slope is clearly not flat.

A second pipeline then runs epochs of 24 elements of 1 MB and one outlier of ``--outlier-mb`` (300 MB), shuffled,
and measures the shared memory its slots hold after each epoch (the sizes of the slot files): it must stay within
2 x S x 1 MB plus one outlier (S = 2 x workers + 8 slots; see docs/RELIABILITY.md) and not grow with epochs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import tfbridge as tb

_WARMUP_EPOCHS = 10  # pool start, TensorFlow's first-iteration caches: not drift
_RSS_SLOPE_LIMIT_KB = 64.0  # per epoch: 6.4 MB over 100 epochs, half of one 128 KB element per epoch
_FD_SLOPE_LIMIT = 0.02  # per epoch: two descriptors over 100 epochs


class Records:
    """``n`` batches of 32 rows x 1024 float32 (128 KB: the array travels through shared memory) and 32 int64
    labels; batch i is filled with i, so its content says which it is; a little CPU work each."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        x = np.full((32, 1024), i, np.float32)
        x += np.sin(x) * 0  # work that keeps the value
        return x, np.full((32,), i, np.int64)


def _status_kb(pid: int | str, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children() -> set[int]:
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _fds() -> list[str]:
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:
            continue
    return out


def _memfds() -> int:
    return sum(target.startswith("/memfd:") for target in _fds())


def _slot_mappings() -> int:
    return sum("memfd:tfbridge" in line for line in Path("/proc/self/maps").read_text().splitlines())


def _slot_bytes() -> int:
    """Bytes in the shared-memory slot files this process holds, each file once (a mapping keeps its own fd)."""
    sizes = {}
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith("/memfd:tfbridge"):
                st = os.stat(fd)
                sizes[st.st_dev, st.st_ino] = st.st_size
        except OSError:
            continue
    return sum(sizes.values())


class WithOutlier:
    """24 batches of 1 MB (256 rows x 1024 float32) and one of ``big_mb`` MB (more rows); batch i holds i."""

    def __init__(self, big_mb: int) -> None:
        self.big_mb = big_mb

    def __len__(self) -> int:
        return 25

    def __getitem__(self, i: int) -> Any:
        mb = self.big_mb if i == 24 else 1
        return np.full((mb * 256, 1024), i, np.float32)


def outliers(epochs: int, big_mb: int, workers: int) -> tuple[list[tuple[str, str]], list[str]]:
    """The outlier run: its figures and its failures."""
    mb = 2**20
    bound = (2 * (2 * workers + 8) + big_mb) * mb
    ds = tb.to_dataset(WithOutlier(big_mb), executor="process", workers=workers, batched=True, shuffle=True, seed=7)
    held, wrong = [], 0
    for _ in range(epochs):
        ids = []
        for x in ds:
            rows = x.numpy()
            i = int(rows[0, 0])
            wrong += rows.shape[0] != (big_mb if i == 24 else 1) * 256 or not rows.min() == rows.max() == i
            ids.append(i)
        del x, rows
        wrong += sorted(ids) != list(range(25))
        gc.collect()  # the epoch's last tensors and iterator: every slot is free
        held.append(_slot_bytes())
    figures = [
        ("outlier epochs", f"{epochs} (24 x 1 MB + one {big_mb} MB element each, shuffled)"),
        ("slot memory per epoch", " ".join(f"{h / mb:.0f}" for h in held) + " MB"),
        ("slot memory bound", f"{bound / mb:.0f} MB (2 x {2 * workers + 8} slots x 1 MB + one outlier)"),
    ]
    failures = []
    if wrong:
        failures.append(f"{wrong} outlier epochs or elements were not delivered intact, each once")
    if max(held) > bound or held[-1] > held[0]:
        failures.append("shared memory grows with outliers")
    return figures, failures


def _tfbridge_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tfbridge")}


def _slope(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), np.asarray(values, float), 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--elements", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outlier-epochs", type=int, default=12)
    parser.add_argument("--outlier-mb", type=int, default=300)
    args = parser.parse_args()

    gc.collect()
    children0, memfds0, maps0, threads0 = _children(), _memfds(), _slot_mappings(), _tfbridge_threads()
    started = time.perf_counter()
    n = args.elements
    ds = tb.to_dataset(Records(n), executor="process", workers=args.workers, shuffle=True, seed=2024)
    rss, fds, worker_rss = [], [], []
    lost = duplicates = corrupt = 0
    orders: set[int] = set()  # hashes: keeping 100 orders would itself grow the RSS measured
    for epoch in range(args.epochs):
        ids = []
        for x, y in ds:
            i = int(y[0])
            xs = x.numpy()
            if not (xs[0, 0] == xs[-1, -1] == i and int(y[-1]) == i):
                corrupt += 1
            ids.append(i)
        distinct = set(ids)
        lost += n - len(distinct & set(range(n)))
        duplicates += len(ids) - len(distinct)
        orders.add(hash(tuple(ids)))
        del ids, distinct
        rss.append(_status_kb("self"))
        fds.append(len(_fds()))
        worker_rss.append(sum(_status_kb(pid) for pid in _children() - children0))
        if epoch % 10 == 9:
            print(f"  epoch {epoch + 1:3d}: RSS {rss[-1] / 1024:7.1f} MB, fds {fds[-1]}, "
                  f"workers' RSS {worker_rss[-1] / 1024:6.1f} MB", flush=True)
    elapsed = time.perf_counter() - started
    live_workers = len(_children() - children0)
    del ds, x, y, xs
    outlier_figures, outlier_failures = outliers(args.outlier_epochs, args.outlier_mb, args.workers)

    gc.collect()
    deadline = time.monotonic() + 10
    for t in _tfbridge_threads() - threads0:
        t.join(max(0.0, deadline - time.monotonic()))
    leaked_processes = len(_children() - children0)
    leaked_memfds = _memfds() - memfds0
    leaked_mappings = _slot_mappings() - maps0
    leaked_threads = len(_tfbridge_threads() - threads0)

    steady = slice(min(_WARMUP_EPOCHS, max(args.epochs - 2, 0)), None)
    rss_slope, fd_slope = _slope(rss[steady]), _slope(fds[steady])
    worker_slope = _slope(worker_rss[steady])
    figures = [
        ("epochs", f"{args.epochs}"),
        ("elements per epoch", f"{n} (batches of 32 x 1024 float32 + 32 int64 labels, 128 KB)"),
        ("elements delivered", f"{args.epochs * n - lost}"),
        ("elements lost", f"{lost}"),
        ("duplicates", f"{duplicates}"),
        ("corrupt elements", f"{corrupt}"),
        ("distinct epoch orders", f"{len(orders)} of {args.epochs}"),
        ("worker processes", f"{live_workers} during the run"),
        ("RSS start / end", f"{rss[0] / 1024:.1f} MB / {rss[-1] / 1024:.1f} MB"),
        ("RSS slope", f"{rss_slope:+.2f} KB per epoch (epochs {steady.start + 1}-{args.epochs})"),
        ("workers' RSS start / end", f"{worker_rss[0] / 1024:.1f} MB / {worker_rss[-1] / 1024:.1f} MB"),
        ("workers' RSS slope", f"{worker_slope:+.2f} KB per epoch"),
        ("open fds start / end", f"{fds[0]} / {fds[-1]}"),
        ("open fds slope", f"{fd_slope:+.4f} per epoch"),
        ("leaked processes", f"{leaked_processes}"),
        ("leaked memfds", f"{leaked_memfds} descriptors, {leaked_mappings} mappings"),
        ("leaked threads", f"{leaked_threads}"),
        ("elapsed", f"{elapsed:.1f} s ({args.epochs * n / elapsed:.0f} elements/s)"),
        *outlier_figures,
    ]
    print(f"tfbridge soak: {args.epochs} epochs, process executor ({args.workers} workers), shuffle=True")
    width = max(len(k) for k, _ in figures)
    for key, value in figures:
        print(f"  {key:<{width}}  {value}")

    failures = list(outlier_failures)
    if lost or duplicates or corrupt:
        failures.append(f"{lost} lost, {duplicates} duplicated, {corrupt} corrupt elements")
    if len(orders) < args.epochs:
        failures.append("shuffle repeated an epoch's order")
    if leaked_processes or leaked_memfds > 0 or leaked_mappings > 0 or leaked_threads:
        failures.append("something outlived the dataset")
    if rss_slope > _RSS_SLOPE_LIMIT_KB or worker_slope > _RSS_SLOPE_LIMIT_KB:
        failures.append(f"memory grows (limit {_RSS_SLOPE_LIMIT_KB:g} KB per epoch)")
    if fd_slope > _FD_SLOPE_LIMIT:
        failures.append(f"open descriptors grow (limit {_FD_SLOPE_LIMIT:g} per epoch)")
    print("SOAK " + ("FAILED: " + "; ".join(failures) if failures else "PASSED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

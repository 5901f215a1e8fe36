"""What a tf.data service worker SIGKILLed mid-epoch costs the epoch: elements lost and repeated, and how long
until the epoch ends (or the consumer gets an error), with TensorFlow's timeouts and with short ones, in both
processing modes, with the dead worker left dead and with it restarted on its port.

Each run starts a dispatcher and 2 workers (A and B) as `tfbridge service ...` processes on localhost; worker B
listens on a fixed port. A consumer process iterates `tb.distribute(tf.data.Dataset.range(3000).map(f), ...)`,
where f does a little CPU work and tags each element with the worker that made it (each worker runs in its own
directory holding its name). Once the consumer has 600 elements, B is SIGKILLed. Then:
- "left dead": nothing; the run waits up to --stall-cap seconds (default 300) for the epoch to end;
- "restarted": B is started again on the same port (`tfbridge service worker --port` as before), the way a
  supervisor (systemd `Restart=always`, a Kubernetes pod) would: at once, or after 30 or 90 s.
The dispatcher runs with TensorFlow's INFO log on, so the time it declares B lost ("Lost worker ... due to
timeout") is read from its log. "short timeouts" are `--worker-timeout 5` on the dispatcher and
`--heartbeat-interval 0.5` on the workers; "TensorFlow's" are the defaults (worker timeout 600 s, heartbeat 30 s).
A last run distributes a materialized dataset (tb.materialize, 16 shards): there a split is a whole shard.

    .venv/bin/python benchmarks/service_faults.py [--stall-cap SECONDS] [--only N ...]

Prints a Markdown table (docs/RELIABILITY.md keeps the last one) and exits 0; it checks nothing itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ELEMENTS = 3000
KILL_AT = 600
SHARDS = 16
SHORT_WORKER_TIMEOUT_S = 5.0
SHORT_HEARTBEAT_S = 0.5
_START_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 20.0
# glog's INFO line: "I0000 00:00:1796019384.687847   16068 dispatcher_impl.cc:1496] Lost worker HOST:PORT due to
# timeout", the number after "00:00:" being the Unix time.
_LOST = re.compile(r"^I\d{4} \d\d:\d\d:(\d+\.\d+) .*\] Lost worker (\S+) due to timeout", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    mode: str  # "distributed_epoch" or "parallel_epochs"
    short: bool  # short timeouts, else TensorFlow's
    restart: bool  # B restarted on its port, else left dead
    materialized: bool = False
    restart_after_s: float = 0.0  # how long B stays dead before it is restarted

    def label(self) -> tuple[str, str, str]:
        source = f"materialized, {SHARDS} shards" if self.materialized else f"range({ELEMENTS}).map(f)"
        timeouts = (
            f"short (worker timeout {SHORT_WORKER_TIMEOUT_S:g} s, heartbeat {SHORT_HEARTBEAT_S:g} s)"
            if self.short
            else "TensorFlow's (600 s, 30 s)"
        )
        if not self.restart:
            return f"`{self.mode}`, {source}", timeouts, "left dead"
        after = f" after {self.restart_after_s:g} s" if self.restart_after_s else " at once"
        return f"`{self.mode}`, {source}", timeouts, f"restarted on its port{after}"


CASES = [
    Case("distributed_epoch", short=False, restart=False),
    Case("distributed_epoch", short=True, restart=False),
    Case("parallel_epochs", short=False, restart=False),
    Case("parallel_epochs", short=True, restart=False),
    Case("distributed_epoch", short=False, restart=True),
    Case("distributed_epoch", short=True, restart=True),
    Case("parallel_epochs", short=False, restart=True),
    Case("parallel_epochs", short=True, restart=True),
    Case("distributed_epoch", short=True, restart=True, materialized=True),
    Case("distributed_epoch", short=False, restart=True, restart_after_s=30.0),
    Case("distributed_epoch", short=False, restart=True, restart_after_s=90.0),
]


@dataclass
class Outcome:
    per_worker_at_kill: dict[str, int] = field(default_factory=dict)
    delivered: Counter[int] = field(default_factory=Counter)
    end: str = ""  # "ended", "error: ...", or "stalled"
    end_after_kill_s: float = 0.0
    last_element_after_kill_s: float | None = None
    lost_declared_after_kill_s: float | None = None
    restart_listening_after_kill_s: float | None = None


# ---- the consumer process ------------------------------------------------------------------------------------


def consume(address: str, mode: str, saved: str | None) -> None:
    """Print one line per element ("value worker monotonic-time"), then "END t" or "ERROR t message"."""
    import tensorflow as tf

    import tfbridge as tb

    def tag(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        m = tf.fill([48, 48], tf.cast(x % 7, tf.float32) / 7.0)
        busy = tf.reduce_sum(tf.linalg.matmul(tf.linalg.matmul(m, m), m))
        return x + tf.cast(busy * 0.0, tf.int64), tf.io.read_file("worker_id.txt")

    if saved is None:
        ds = tf.data.Dataset.range(ELEMENTS)
    else:
        from tfbridge.materialize import load

        ds = load(saved)
    ds = tb.distribute(ds.map(tag), address, processing_mode=mode)
    try:
        for x, w in ds.as_numpy_iterator():
            print(int(x), w.decode(), f"{time.monotonic():.3f}", flush=True)
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print("ERROR", f"{time.monotonic():.3f}", message, flush=True)
        return
    print("END", f"{time.monotonic():.3f}", flush=True)


# ---- the run -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _server(args: list[str], cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    with log.open("a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfbridge", "service", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
    lines = _lines(proc)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            msg = f"{args} exited with {proc.wait()} before listening; see {log}"
            raise RuntimeError(msg)
        if "listening on " in line:
            return proc


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=_STOP_TIMEOUT_S)


def run(case: Case, stall_cap: float, root: Path) -> Outcome:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs: list[subprocess.Popen[str]] = []
    out = Outcome()
    try:
        d_port, b_port = _free_port(), _free_port()
        d_args = ["dispatcher", "--port", str(d_port)]
        w_extra = []
        if case.short:
            d_args += ["--worker-timeout", f"{SHORT_WORKER_TIMEOUT_S:g}"]
            w_extra = ["--heartbeat-interval", f"{SHORT_HEARTBEAT_S:g}"]
        d_log = root / "dispatcher.log"
        procs.append(_server(d_args, root, d_log, {**env, "TF_CPP_MIN_LOG_LEVEL": "0"}))
        homes = {}
        for worker_id in ("A", "B"):
            home = homes[worker_id] = root / worker_id
            home.mkdir()
            (home / "worker_id.txt").write_text(worker_id)
        worker_a = ["worker", "--dispatcher", f"localhost:{d_port}", *w_extra]
        worker_b = [*worker_a, "--port", str(b_port)]
        procs.append(_server(worker_a, homes["A"], root / "A.log", env))
        b = _server(worker_b, homes["B"], root / "B.log", env)
        procs.append(b)

        saved = None
        if case.materialized:
            saved = str(root / "saved")
            _materialize(saved)
        consumer = subprocess.Popen(
            [sys.executable, __file__, "--consume", f"localhost:{d_port}", case.mode, *([saved] if saved else [])],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        procs.append(consumer)
        lines = _lines(consumer)
        per_worker: Counter[str] = Counter()
        kill_t = kill_wall = None
        while True:
            timeout = None if kill_t is None else kill_t + stall_cap - time.monotonic()
            if timeout is not None and timeout <= 0:
                out.end, out.end_after_kill_s = "stalled", stall_cap
                break
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                continue
            if line is None:
                out.end = f"consumer exited with {consumer.wait()}"
                break
            first, second, *rest = line.split(" ", 2)
            if first in ("END", "ERROR"):  # "END t" or "ERROR t message"
                assert kill_t is not None, line
                out.end = "ended" if first == "END" else f"error: {rest[0] if rest else ''}"
                out.end_after_kill_s = float(second) - kill_t
                break
            value, worker_id, at = int(first), second, float(rest[0])  # "value worker t"
            out.delivered[value] += 1
            per_worker[worker_id] += 1
            if kill_t is not None:
                out.last_element_after_kill_s = at - kill_t
            elif out.delivered.total() >= KILL_AT:
                out.per_worker_at_kill = dict(per_worker)
                b.send_signal(signal.SIGKILL)
                b.wait(timeout=_STOP_TIMEOUT_S)
                kill_t, kill_wall = time.monotonic(), time.time()
                if case.restart:
                    time.sleep(case.restart_after_s)  # B stays dead this long (the consumer's lines queue up)
                    procs.append(_server(worker_b, homes["B"], root / "B.log", env))
                    out.restart_listening_after_kill_s = time.monotonic() - kill_t
        assert kill_wall is not None
        for when, worker in _LOST.findall(d_log.read_text(errors="replace")):
            if worker == f"localhost:{b_port}":
                out.lost_declared_after_kill_s = float(when) - kill_wall
        return out
    finally:
        _stop(procs)


class _Indexed:
    """0 .. ELEMENTS-1 as an indexed source: materialize writes it in SHARDS shards (an array would be one)."""

    def __len__(self) -> int:
        return ELEMENTS

    def __getitem__(self, i: int) -> int:
        return i


def _materialize(path: str) -> None:
    import tfbridge as tb

    tb.materialize(_Indexed(), path, batched=False, shards=SHARDS, executor="serial", verbose=False)


# ---- the table -----------------------------------------------------------------------------------------------


def row(case: Case, out: Outcome) -> str:
    copies = 2 if case.mode == "parallel_epochs" else 1
    expected = Counter({i: copies for i in range(ELEMENTS)})
    lost = (expected - out.delivered).total()
    repeated = (out.delivered - expected).total()
    at_kill = ", ".join(f"{w} {n}" for w, n in sorted(out.per_worker_at_kill.items()))
    last = "-" if out.last_element_after_kill_s is None else f"{out.last_element_after_kill_s:.1f} s"
    if out.end == "stalled":
        end = f"**did not end**: no element and no error for {out.end_after_kill_s:.0f} s (stopped there)"
    else:
        end = f"{out.end} {out.end_after_kill_s:.1f} s after the kill"
    if out.restart_listening_after_kill_s is not None:
        end += f" (B listening again after {out.restart_listening_after_kill_s:.1f} s)"
    declared = "not seen" if out.lost_declared_after_kill_s is None else f"{out.lost_declared_after_kill_s:.1f} s"
    mode, timeouts, b = case.label()
    return (
        f"| {mode} | {timeouts} | {b} | {at_kill} | {lost} | {repeated} | {last} | {declared} | {end} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall-cap", type=float, default=300.0, help="seconds to wait for an epoch to end")
    parser.add_argument("--only", type=int, nargs="*", help="run only these cases (1-based, in table order)")
    parser.add_argument("--consume", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        address, mode, *saved = args.consume
        consume(address, mode, saved[0] if saved else None)
        return
    import tensorflow as tf

    print(
        f"{ELEMENTS} elements, worker B SIGKILLed once the consumer has {KILL_AT}; dispatcher and 2 workers on "
        f"localhost ({os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}). "
        f"`parallel_epochs` expects every element twice (once per worker).\n",
        flush=True,
    )
    print(
        "| mode, source | timeouts | worker B | delivered at the kill | lost | repeated | last element after the "
        "kill | dispatcher declared B lost after | the epoch |",
    )
    print("|---|---|---|---|---:|---:|---:|---:|---|", flush=True)
    for k, case in enumerate(CASES, 1):
        if args.only and k not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="tfbridge-service-faults-") as tmp:
            print(row(case, run(case, args.stall_cap, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()

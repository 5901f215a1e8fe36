"""Worker processes' lives: they end with the main process however it dies and whatever they are doing, a
process forked from the main one neither holds nor stops them, their descriptors reach no other process, each
element's random draws come from ``(seed, epoch, index)`` whichever worker makes it, and workers are replaced
by fresh ones after ``max_elements_per_worker`` elements or above ``max_worker_rss``."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _leaks import wait_exit
from _lifecycle_sources import Augmented, InheritableFds, Leaks

import tfbridge as tb

pytestmark = pytest.mark.timeout(120)

_GONE_WITHIN_S = 2.0
_MIB = 2**20


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[None]:
    """While inside, orphaned grandchildren are re-parented to this process (a child subreaper), so the test can
    see them exit and reap them; without it they would go to the machine's init."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        assert libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0) == 0


def _gone_within(pids: list[int], seconds: float) -> tuple[list[int], float]:
    """The pids still running ``seconds`` after now (zombies count as gone), and how long the others took."""
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not wait_exit(pid, min(0.05, max(0.0, deadline - time.monotonic())))]
    return left, time.monotonic() - started


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # only if the test failed: never leave one behind
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _start(script: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    path = tmp_path / "main.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def _read_until(proc: subprocess.Popen[str], word: str, lines: int = 1) -> list[list[str]]:
    """The next ``lines`` stdout lines starting with ``word`` (the words after it); fails with the script's
    stderr when it ends first."""
    assert proc.stdout is not None
    found = []
    for line in proc.stdout:
        if line.startswith(word):
            found.append(line.split()[1:])
            if len(found) == lines:
                return found
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the script ended before printing {word}: {err[-3000:]}")


# ---- the main process dies -----------------------------------------------------------------------------------

_HUNG_SCRIPT = """
import os, sys, time
import numpy as np
import tfbridge as tb

HOW = sys.argv[1]

class Hangs:
    def __init__(self):
        self.main = os.getpid()
    def __len__(self):
        return 100
    def __getitem__(self, i):
        if os.getpid() != self.main:  # in a worker (the peek reads in the main process)
            os.write(1, f"HUNG {os.getpid()}\\n".encode())  # one write: the two workers' lines never mix
            if HOW == "sleep":
                time.sleep(600)
            elif HOW == "spin":
                while True:
                    pass
            else:  # native code that keeps the GIL: no Python thread of the worker runs meanwhile
                import ctypes
                ctypes.PyDLL(None).sleep(600)
        return np.zeros(4, np.float32)

ds = tb.to_dataset(Hangs(), executor="process", workers=2, peek=1, batched=False)
for x in ds:
    pass
"""


@pytest.mark.parametrize(
    ("how", "sig"),
    [("sleep", signal.SIGKILL), ("spin", signal.SIGKILL), ("native", signal.SIGTERM)],
    ids=["sleep-SIGKILL", "spin-SIGKILL", "native-code-holding-the-GIL-SIGTERM"],
)
def test_workers_inside_getitem_exit_when_the_main_process_is_killed(
    how: str, sig: signal.Signals, tmp_path: Path
) -> None:
    with _adopting_orphans():
        proc = _start(_HUNG_SCRIPT, tmp_path, how)
        workers: list[int] = []
        try:
            workers = [int(words[0]) for words in _read_until(proc, "HUNG", 2)]
            proc.send_signal(sig)
            left, took = _gone_within(workers, _GONE_WITHIN_S)
            assert not left, f"workers {left} still run {_GONE_WITHIN_S} s after the main process was killed"
            print(f"workers gone {took:.3f} s after the signal")  # 0.04-0.3 s here
        finally:
            proc.kill()
            proc.communicate()
            _reap(workers)


_FORK_SCRIPT = """
import gc, os, sys
import numpy as np
import tfbridge as tb
from tfbridge.executors import processes

HOW = sys.argv[1]

class Big:
    def __len__(self):
        return 40
    def __getitem__(self, i):
        return np.full(100_000, i, np.float32)

def memfds():
    found = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:")
        except OSError:
            pass
    return found

ds = tb.to_dataset(Big(), executor="process", workers=2, peek=1, batched=False)
assert [int(x[0]) for x in ds] == list(range(40))
executor, = [o for o in gc.get_objects() if isinstance(o, processes.ProcessExecutor)]
workers = executor.pids()
pid = os.fork()
if pid == 0:
    maps = sum("memfd:tfbridge" in line for line in open("/proc/self/maps"))
    print("CHILD", memfds(), maps, flush=True)
    if HOW == "os._exit":
        os._exit(0)
    sys.exit(0)  # atexit handlers and finalizers run
_, status = os.waitpid(pid, 0)
assert status == 0, status
assert [int(x[0]) for x in ds] == list(range(40)), "the next pass"
assert executor.pids() == workers, "the same workers"
print("WORKERS", *workers, flush=True)
sys.stdin.read()  # until the test kills this process
"""


@pytest.mark.parametrize("how", ["os._exit", "sys.exit"])
def test_a_forked_child_neither_holds_nor_stops_the_parents_workers(how: str, tmp_path: Path) -> None:
    with _adopting_orphans():
        path = tmp_path / "main.py"
        path.write_text(textwrap.dedent(_FORK_SCRIPT))
        proc = subprocess.Popen(
            [sys.executable, str(path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        workers: list[int] = []
        try:
            (child,) = _read_until(proc, "CHILD")
            assert child == ["0", "0"], "the child closed its copies of the slots (descriptors, mappings)"
            (words,) = _read_until(proc, "WORKERS")  # the parent's next pass ran whole on the same workers
            workers = [int(w) for w in words]
            assert len(workers) == 2
            proc.kill()
            proc.wait()
            left, _ = _gone_within(workers, _GONE_WITHIN_S)
            assert not left, f"workers {left} still run {_GONE_WITHIN_S} s after the main process was killed"
        finally:
            proc.kill()
            proc.communicate()
            _reap(workers)


def test_no_descriptor_of_a_pool_is_inheritable_in_the_main_process_or_its_workers() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    ex = ProcessExecutor(2)
    try:
        got = list(ex.imap(adapt(InheritableFds(6), batched=False).task(None), range(6)))
        assert [int(x[1]) for x in got] == [0] * 6, "a process the source starts inherits nothing of the pool"
        (pool,) = ex._pools
        fds = [*pool.slot_fds, *(w.conn.fileno() for w in pool.workers), *(w.death_w for w in pool.workers)]
        assert len(fds) == len(pool.slot_fds) + 4
        assert not [fd for fd in fds if fd is not None and os.get_inheritable(fd)]
    finally:
        ex.close()


# ---- seeds ---------------------------------------------------------------------------------------------------


def _values(seed: int, workers: int, executor: str = "process", epochs: int = 2) -> list[list[list[float]]]:
    ds = tb.to_dataset(
        Augmented(40), executor=executor, workers=workers, seed=seed, peek=1, batched=False, cast_floats=None
    )
    return [[x.numpy().tolist() for x in ds] for _ in range(epochs)]


def test_process_random_draws_depend_on_seed_epoch_and_index_never_on_the_worker_count() -> None:
    one = _values(7, 1)
    two = _values(7, 2)
    assert [int(e[0]) for e in two[0]] == list(range(40))
    assert one == two, "same seed: the same draws with one worker and with two"
    assert _values(7, 2) == two, "and again"
    assert one[0] != one[1], "a new epoch gives new draws"
    first = [e[1:] for e in one[0]]
    assert len({tuple(e) for e in first}) == 40, "every element has draws of its own"
    other = _values(8, 2)
    assert all(a != b for a, b in zip(other[0], two[0], strict=True)), "another seed gives other draws"


def test_serial_draws_follow_the_callers_own_seeding_as_they_did() -> None:
    def run() -> list[list[list[float]]]:
        np.random.seed(3)
        random.seed(3)
        return _values(7, 1, executor="serial")

    assert run() == run(), "tfbridge leaves the global RNGs to the caller in the caller's process"


# ---- recycling workers ---------------------------------------------------------------------------------------


def _leaky(n: int, **options: Any) -> Any:
    return tb.to_dataset(Leaks(n), executor=tb.ExecutorOptions("process", workers=2, **options), peek=1, batched=False)


def test_a_leaking_worker_above_max_worker_rss_is_replaced_between_elements_and_nothing_is_lost() -> None:
    limit = 64 * _MIB  # an idle worker holds about 21 MiB of its own here; each element leaks 1 MiB
    got = [x.numpy().tolist() for x in _leaky(300, max_worker_rss=limit)]
    assert [e[0] for e in got] == list(range(300)), "every element once, in order"
    pids = {e[1] for e in got}
    assert len(pids) >= 4, f"workers were replaced: {len(pids)} pids"
    worst = max(e[2] for e in got)
    # a worker asks to be replaced after the element that took it over the limit, and makes the one or two it
    # already holds first: 1 MiB each
    assert worst <= limit + 8 * _MIB, f"a worker reached {worst / _MIB:.0f} MiB (limit {limit / _MIB:.0f} MiB)"


def test_a_worker_is_replaced_after_max_elements_per_worker_over_epochs_without_changing_the_draws() -> None:
    ds = _leaky(150, max_elements_per_worker=40)
    for _ in range(2):
        got = [x.numpy().tolist() for x in ds]
        assert [e[0] for e in got] == list(range(150))
        made: dict[int, int] = {}
        for e in got:
            made[e[1]] = made.get(e[1], 0) + 1
        assert max(made.values()) <= 40, made
        assert len(made) >= 4, made

    def draws(options: tb.ExecutorOptions) -> list[list[float]]:
        ds = tb.to_dataset(Augmented(60), executor=options, seed=7, peek=1, batched=False, cast_floats=None)
        return [x.numpy().tolist() for x in ds]

    recycled = draws(tb.ExecutorOptions("process", workers=2, max_elements_per_worker=7))
    assert recycled == draws(tb.ExecutorOptions("process", workers=1)), "fresh workers make the same draws"


def test_workers_start_when_the_dataset_is_built_and_serve_its_first_pass() -> None:
    import gc

    from _sources import Counting

    from tfbridge.sources._positions import passes_in

    ds = tb.to_dataset(Counting(12), executor="process", workers=2)
    ex = passes_in(ds)[0].feed.runner
    ex._warmed()  # the thread that starts them is done: nothing has been asked of the dataset yet
    started = sorted(ex.pids())
    assert len(started) == 2, "the workers start while the dataset is built, not at its first element"
    assert [int(x[0, 0]) for x, _ in ds.as_numpy_iterator()] == list(range(12))
    assert sorted(ex.pids()) == started, "the first pass uses the workers started ahead"
    del ds, ex
    gc.collect()
    assert all(wait_exit(pid, 10) for pid in started)


def test_a_dataset_dropped_before_its_first_pass_stops_the_workers_started_for_it() -> None:
    import gc

    from _sources import Counting

    from tfbridge.sources._positions import passes_in

    ds = tb.to_dataset(Counting(12), executor="process", workers=2)
    ex = passes_in(ds)[0].feed.runner
    ex._warmed()
    started = ex.pids()
    assert len(started) == 2
    del ds, ex
    gc.collect()
    assert all(wait_exit(pid, 10) for pid in started), "no worker outlives the dataset that made it"


def test_closing_while_the_workers_are_still_starting_neither_waits_nor_leaks() -> None:
    from _sources import Counting

    from tfbridge.executors.processes import ProcessExecutor
    from tfbridge.sources._python import IndexedTask
    from tfbridge.sources.indexed import _Getter, _identity

    ex = ProcessExecutor(2)
    ex.warm(IndexedTask(_Getter(Counting(4), _identity), None))
    ex.close()  # at once, from the thread that built it: the warm-up shuts its pool down itself
    assert ex._warming is not None
    ex._warming.join(30)
    assert not ex._warming.is_alive()
    assert ex.pids() == [], "the pool started ahead is shut down once the executor is closed"


def test_a_dataset_pad_batch_may_build_again_starts_no_workers_until_its_first_pass() -> None:
    from _sources import Listed

    from tfbridge.sources._positions import passes_in

    tokens = Listed([np.arange(1 + i % 4, dtype=np.int64) for i in range(8)])
    ds = tb.to_dataset(tokens, batched=False, executor="process", workers=2)
    ex = passes_in(ds)[0].feed.runner
    assert ex._warming is None and ex.pids() == [], "pad_batch(ds) builds again: these workers might never run"
    batches = tb.pad_batch(ds, 4)
    assert [b.shape for b in batches.as_numpy_iterator()] == [(4, 4), (4, 4)]
    assert ex.pids() == []


def test_closing_beside_a_pass_suspended_between_elements_does_not_wait_for_it(monkeypatch: Any) -> None:
    """An iterator dropped part-way leaves its pass suspended (TensorFlow does not say it went); its dataset is
    then closed at exit. Nothing runs in that pass, so close() kills its workers and returns at once: before, it
    waited the whole join timeout for the pass to leave, which made every such script's exit seconds late."""
    import threading

    from _sources import Counting

    from tfbridge.executors import processes
    from tfbridge.executors.processes import ProcessExecutor
    from tfbridge.sources._python import IndexedTask
    from tfbridge.sources.indexed import _Getter, _identity

    monkeypatch.setattr(processes, "_WORKER_JOIN_TIMEOUT_S", 600.0)  # a wait would outlast the join below
    ex = ProcessExecutor(2)
    elements = ex.imap(IndexedTask(_Getter(Counting(20), _identity), None), range(20))
    assert int(next(elements)[1][0]) == 0
    (pool,) = ex._pools
    pids = pool.pids()
    assert pool.lock.locked() and pool.inside is None, "suspended: holds its pool, runs in no thread"
    closer = threading.Thread(target=ex.close)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "close() waited for a pass that was not running"
    assert all(wait_exit(pid, 30) for pid in pids), "its workers were killed"
    with pytest.raises(tb.TfBridgeError, match="closed with the dataset that owned it, part-way through this pass"):
        list(elements)  # asked again after all: it says why its workers are gone (not "killed by the system")
    assert not pool.lock.locked(), "the pass let go of its pool when it was asked again and ended"

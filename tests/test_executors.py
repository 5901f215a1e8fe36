"""Executors: identical ordered content, worker errors and deaths, cleanup, seeds, unguarded scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _leaks import children
from _sources import Deterministic

import tfbridge as tb

pytestmark = pytest.mark.timeout(180)

EXECUTORS = ["serial", "thread", "process"]


def _epochs(ds: Any, n: int) -> list[list[Any]]:
    return [[tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds] for _ in range(n)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_serial_thread_process_give_identical_ordered_content_over_three_epochs(shuffle: bool) -> None:
    runs = {
        name: _epochs(tb.to_dataset(Deterministic(), executor=name, workers=2, shuffle=shuffle, seed=11), 3)
        for name in EXECUTORS
    }
    reference = runs["serial"]
    assert [int(e[0]["n"][0]) for e in reference[1]] != [int(e[0]["n"][0]) for e in reference[0]]
    for name in ("thread", "process"):
        for epoch_ref, epoch in zip(reference, runs[name], strict=True):
            assert len(epoch) == 37
            for a, b in zip(epoch_ref, epoch, strict=True):
                for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
                    np.testing.assert_array_equal(x, y)


class BigArrays:
    """Arrays large enough to travel through shared memory; content checkable from the index."""

    def __len__(self) -> int:
        return 37

    def __getitem__(self, i: int) -> Any:
        return np.full((64, 1024), i, np.float32), np.arange(i, i + 64 * 2000, dtype=np.int64).reshape(64, 2000)


def test_shared_memory_results_stay_intact_when_many_are_held_at_once() -> None:
    ds = tb.to_dataset(BigArrays(), executor="process", workers=2)
    for _ in range(2):
        held = list(ds)  # far more elements alive than slots: leased views must never be overwritten
        assert len(held) == 37
        for i, (x, r) in enumerate(held):
            assert x.shape == (64, 1024) and float(x.numpy().min()) == float(x.numpy().max()) == i
            assert int(r.numpy()[0, 0]) == i and int(r.numpy()[-1, -1]) == i + 64 * 2000 - 1


def test_shared_memory_results_stay_intact_when_consumed_one_by_one() -> None:
    ds = tb.to_dataset(BigArrays(), executor="process", workers=2, shuffle=True, seed=2)
    for _ in range(3):
        seen = []
        for x, r in ds:
            i = int(r.numpy()[0, 0])
            assert float(x.numpy()[0, 0]) == float(x.numpy()[-1, -1]) == i
            seen.append(i)
        assert sorted(seen) == list(range(37))


class RaisesAt:
    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 30

    def __getitem__(self, i: int) -> Any:
        if i == self.bad:
            raise ValueError(f"corrupt record {i}")
        return np.zeros((2, 2))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_user_error_at_index_17_becomes_source_error_naming_17(executor: str) -> None:
    ds = tb.to_dataset(RaisesAt(17), executor=executor, workers=2, peek=1)
    with pytest.raises(tf.errors.OpError) as info:
        for _ in ds:
            pass
    text = str(info.value)
    assert "SourceError: element 17: ValueError: corrupt record 17" in text
    assert "__getitem__" in text  # the original traceback travels along, also from a worker process


def test_source_error_from_a_worker_keeps_index_and_traceback() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.pipeline import _Task
    from tfbridge.sources import adapt

    ex = ProcessExecutor(2)
    try:
        with pytest.raises(tb.SourceError) as info:
            list(ex.imap(_Task(adapt(RaisesAt(5)), None), range(10)))
        assert info.value.index == 5
        assert "corrupt record 5" in info.value.traceback and "__getitem__" in info.value.traceback
    finally:
        ex.close()


class KillsItself:
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        if i == 20:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros((2, 2))


def test_worker_killed_mid_epoch_raises_worker_died_naming_the_element() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.pipeline import _Task
    from tfbridge.sources import adapt

    before = children()
    ex = ProcessExecutor(2)
    try:
        with pytest.raises(tb.WorkerDiedError, match=r"SIGKILL while producing element 20") as info:
            list(ex.imap(_Task(adapt(KillsItself()), None), range(40)))
        assert info.value.index == 20
        assert children() <= before, "a broken pool is shut down at once"
    finally:
        ex.close()


def test_worker_killed_inside_a_pipeline_surfaces_as_worker_died_error() -> None:
    ds = tb.to_dataset(KillsItself(), executor="process", workers=2, peek=1)
    with pytest.raises(tf.errors.OpError, match="WorkerDiedError"):
        for _ in ds:
            pass


def test_break_after_three_batches_then_gc_leaves_no_process_or_shared_memory() -> None:
    before = children()
    ds = tb.to_dataset(Deterministic(), executor="process", workers=2)
    for i, _ in enumerate(ds):
        if i == 2:
            break
    assert len(children() - before) == 2, "the pool lives while the dataset does"
    del ds, _  # the nothing_left_behind fixture checks that nothing (shared memory included) is left


def test_on_epoch_end_reshuffle_reaches_the_workers() -> None:
    ds = tb.to_dataset(Deterministic(), executor="process", workers=2)
    first, second = (_epoch_ids(ds) for _ in range(2))
    assert first == list(range(37)) and second == list(range(36, -1, -1))


def _epoch_ids(ds: Any) -> list[int]:
    return [int(x["n"].numpy()[0]) for x, _ in ds]


class Augmenting:
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> Any:
        return np.random.random((1, 1))  # the legacy global RNG, as augmentation code often uses


def test_each_worker_gets_its_own_rng_seed() -> None:
    ds = tb.to_dataset(Augmenting(), executor="process", workers=2, seed=5, cast_floats=None)
    values = [float(x.numpy()[0, 0]) for x in ds]
    assert len(set(values)) == len(values), "two workers with one seed would repeat each other's draws"
    again = [float(x.numpy()[0, 0]) for x in ds]
    assert again != values, "a new epoch gives new draws"


def test_unpicklable_source_with_process_executor_says_why() -> None:
    import threading

    class Locked(RaisesAt):
        def __init__(self) -> None:
            super().__init__(-1)
            self.lock = threading.Lock()

    with pytest.raises(tb.TfBridgeError, match=r"(?s)cannot be sent to worker processes.*Hint: use executor=\"thread\""):
        tb.to_dataset(Locked(), executor="process", workers=2, peek=1)
    assert tb.inspect(Locked()).executor["name"] != "process"


def test_auto_choice_reflects_cpu_time_waiting_and_picklability() -> None:
    from tfbridge.executors import choose

    cpu = choose("indexed", wall_s=0.16, cpu_s=0.16, count=8, nbytes=8 * 16_000)
    assert cpu.name == "process" and cpu.workers >= 2 and "CPU-bound" in cpu.reason
    waiting = choose("indexed", wall_s=0.08, cpu_s=0.001, count=8)
    assert waiting.name == "thread" and waiting.workers >= 16
    copying = choose("indexed", wall_s=0.08, cpu_s=0.08, count=8, nbytes=8 * 38_500_000)
    assert copying.name == "thread" and "big" in copying.reason
    big_cpu = choose("indexed", wall_s=0.4, cpu_s=0.4, count=8, nbytes=8 * 38_500_000)
    assert big_cpu.name == "process"
    unpicklable = choose("indexed", 0.16, 0.16, 8, 1000, pickles=lambda: "the source does not pickle (lock)")
    assert unpicklable.name == "thread" and "does not pickle" in unpicklable.reason
    assert choose("indexed", 0.0001, 0.0001, 8).name == "serial"
    assert choose("stream", 1.0, 1.0, 8).name == "serial"


def test_source_defined_in_an_unguarded_main_script_runs_under_processes(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import tfbridge as tb

            class Squares:
                def __len__(self):
                    return 9
                def __getitem__(self, i):
                    return np.full((2, 3), i * i, np.float32)

            ds = tb.to_dataset(Squares(), executor="process", workers=2)
            print("GOT", [int(x.numpy()[0, 0]) for x in ds])
            """
        )
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GOT [0, 1, 4, 9, 16, 25, 36, 49, 64]" in out.stdout
    assert "bootstrapping phase" not in out.stderr


def _become_subreaper() -> None:
    """Orphaned grandchildren are re-parented to this process, so the test can wait for them."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0


def test_ctrl_c_in_a_training_script_leaves_no_worker_behind(tmp_path: Path) -> None:
    _become_subreaper()
    script = tmp_path / "loop.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import numpy as np
            import tfbridge as tb

            class Slow:
                def __len__(self):
                    return 10**6
                def __getitem__(self, i):
                    s = 0
                    for k in range(200_000):
                        s += k
                    return np.zeros((4, 4), np.float32)

            ds = tb.to_dataset(Slow(), executor="process", workers=2)
            for n, _ in enumerate(ds):
                if n == 3:
                    from tfbridge.executors import processes
                    import gc
                    pools = [o for o in gc.get_objects() if isinstance(o, processes.ProcessExecutor)]
                    print("WORKERS", *[p for pool in pools for p in pool.pids()], flush=True)
            """
        )
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def as_in_a_terminal() -> None:  # background jobs inherit an ignored SIGINT; a terminal's do not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=as_in_a_terminal,  # noqa: PLW1509 - runs before exec, no threads involved
    )
    try:
        line = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("WORKERS"):
                break
        workers = [int(p) for p in line.split()[1:]]
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        interrupted = True
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # TensorFlow's eager iterator can swallow a Ctrl-C: when the signal lands while the main thread waits in
            # GetNext, the KeyboardInterrupt is raised inside tf's Executor.__del__ and printed as "Exception
            # ignored" (TensorFlow's own behaviour, plain from_generator included), so the loop goes on. What
            # tfbridge owns is that no worker outlives its process, however it ends: the waits below check it.
            interrupted = False
            proc.kill()
            _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if interrupted:
        assert "KeyboardInterrupt" in err
    for pid in workers:  # re-parented to this process once their parent is gone; each must exit by itself
        try:
            os.waitpid(pid, 0)  # blocks until it has exited (the test's timeout guards a hang)
        except ChildProcessError:
            pass  # already reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

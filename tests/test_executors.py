"""Executors: serial, thread and process give identical ordered content over epochs (on_epoch_end's changes
reach the workers), shared-memory results stay intact, per-element seeds, unpicklable sources, sources from an
unguarded ``__main__``, and what ``executor="auto"`` picks. Faults are in test_faults.py, Ray in test_ray.py."""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _leaks import Snapshot, children, wait_exit
from _sources import Augmenting, Bf16, BigArrays, Burning, Counting, Deterministic, WithOutlier

import tfbridge as tb
from tfbridge import executors

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
    ids = [[int(e[0]["n"][0]) for e in epoch] for epoch in reference]
    assert ids[1] != ids[0]
    if not shuffle:  # on_epoch_end reversed the source's order: the next epoch sees it
        assert ids == [list(range(37)), list(range(36, -1, -1)), list(range(37))]
    for name in ("thread", "process"):
        for epoch_ref, epoch in zip(reference, runs[name], strict=True):
            assert len(epoch) == 37
            for a, b in zip(epoch_ref, epoch, strict=True):
                for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
                    np.testing.assert_array_equal(x, y)


def test_thread_executor_keeps_source_order_with_uneven_element_times() -> None:
    ds = tb.to_dataset(Counting(jitter_s=0.01), executor="thread", workers=8)
    assert [int(y.numpy()[0]) for _, y in ds] == list(range(37))


# ---- passes at the same time -------------------------------------------------------------------------------


def _label(element: Any) -> int:
    return int(element[1][0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", EXECUTORS)
def test_interleaved_passes_over_one_executor_each_deliver_their_own_order_exactly_once(name: str) -> None:
    from tfbridge.executors import ProcessExecutor, SerialExecutor, ThreadExecutor
    from tfbridge.sources import adapt

    ex: Any = {"serial": SerialExecutor, "thread": ThreadExecutor, "process": ProcessExecutor}[name](2)
    task = adapt(Counting(40), batched=True).task(None)
    orders = [list(range(40)), list(range(39, -1, -1)), np.random.default_rng(3).permutation(40).tolist()]
    try:
        passes = [ex.imap(task, order) for order in orders]
        got: list[list[int]] = [[], [], []]
        for _ in range(5):  # the first pass is left mid-way while the second starts
            got[0].append(_label(next(passes[0])))
        for _ in range(3):
            got[1].append(_label(next(passes[1])))
        live = [0, 1, 2]  # the third joins; then one element from each in turn until all are done
        while live:
            for k in list(live):
                element = next(passes[k], None)
                if element is None:
                    live.remove(k)
                else:
                    got[k].append(_label(element))
        assert got == orders
        if name == "process":
            assert len(ex.pids()) == 2, "once passes no longer overlap, one pool of workers is left"
            assert [_label(e) for e in ex.imap(task, range(40))] == list(range(40))
    finally:
        ex.close()


def _labels(it: Any) -> list[int]:
    return [int(y.numpy()[0]) for _, y in it]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_whole_pass_run_while_another_is_mid_way_then_the_first_finishes_both_whole(
    executor: str, shuffle: bool
) -> None:
    """``it1 = iter(ds); next(it1); list(iter(ds)); list(it1)``: what Keras does when it validates on the dataset
    it trains on with a steps_per_epoch shorter than the data."""
    reference = tb.to_dataset(Counting(600), executor="serial", batched=True, shuffle=shuffle, seed=4)
    first_order, second_order = _labels(reference), _labels(reference)
    source = Counting(600)
    ds = tb.to_dataset(source, executor=executor, workers=2, batched=True, shuffle=shuffle, seed=4)
    it1 = iter(ds)
    first = _labels([next(it1)])
    second = _labels(iter(ds))
    assert source.ends == 1, "the first pass was still running while the second ran whole"
    first += _labels(it1)
    assert source.begins == source.ends == 2
    assert first == first_order and second == second_order
    assert sorted(first) == list(range(600))


@pytest.mark.timeout(120)
def test_a_pass_dropped_part_way_stops_its_workers_when_the_next_pass_starts_and_the_dataset_leaves_nothing() -> None:
    before = Snapshot.take()
    ds = tb.to_dataset(Counting(600), executor="process", workers=2, batched=True)
    it1 = iter(ds)
    assert _labels([next(it1)]) == [0]
    pool = children() - before.children
    assert len(pool) == 2
    del it1  # dropped part-way: its workers stop when the next pass starts (they may be inside an element)
    gc.collect()
    assert _labels(ds) == list(range(600))
    assert all(wait_exit(pid, 30) for pid in pool)
    assert len(children() - before.children) == 2, "one pool of workers, the next pass's"
    it1, it2 = iter(ds), iter(ds)  # two passes at once: each whole, in order
    first = _labels([next(it1)])
    assert _labels(it2) == list(range(600))
    assert first + _labels(it1) == list(range(600))
    del it1, it2, ds
    gc.collect()
    assert all(wait_exit(pid, 30) for pid in children() - before.children)
    assert Snapshot.take().new_since(before) == []


# ---- shared memory ------------------------------------------------------------------------------------------


def _check_big(x: Any, r: Any) -> int:
    """The element's index, after checking that both arrays hold exactly what element i holds."""
    i = int(r.numpy()[0, 0])
    assert x.shape == (64, 1024) and float(x.numpy().min()) == float(x.numpy().max()) == i
    assert int(r.numpy()[-1, -1]) == i + 64 * 2000 - 1
    return i


def test_shared_memory_results_stay_intact_held_all_at_once_or_consumed_one_by_one() -> None:
    ds = tb.to_dataset(BigArrays(), executor="process", workers=2, shuffle=True, seed=2)
    held = list(ds)  # far more elements alive than slots: leased views must never be overwritten
    first = [_check_big(x, r) for x, r in held]
    assert sorted(first) == list(range(37))
    del held
    one_by_one = [_check_big(x, r) for x, r in ds]  # slots freed and reused while the pass runs
    assert sorted(one_by_one) == list(range(37)) and one_by_one != first
    held = list(ds)
    assert sorted(_check_big(x, r) for x, r in held) == list(range(37))


def _slot_bytes() -> dict[tuple[int, int], int]:
    """Bytes in the shared-memory slots this process holds: the size of each slot file, counted once (a slot's
    mapping keeps a descriptor of its own)."""
    sizes: dict[tuple[int, int], int] = {}
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith("/memfd:tfbridge"):
                st = os.stat(fd)
                sizes[st.st_dev, st.st_ino] = st.st_size
        except OSError:  # closed meanwhile
            continue
    return sizes


@pytest.mark.timeout(180)
def test_one_outlier_element_per_epoch_does_not_pin_its_size_in_every_slot_it_passes_through() -> None:
    """24 elements of 1 MB and one of 96 MB per epoch, 12 epochs: the slots give the outlier's room back when it
    is freed. With 2 workers there are S = 2 x 2 + 8 = 12 slots, each at most twice the largest of the S elements
    freed before it: at most 24 MB between epochs, whatever the epoch (before, 96 MB more every epoch)."""
    slots, mb = 12, 2**20
    ds = tb.to_dataset(WithOutlier(24, 96), executor="process", workers=2, batched=True)
    held = []
    for _ in range(12):
        ids = []
        for x in ds:
            rows = x.numpy()
            i = int(rows[0, 0])
            assert rows.shape == ((96 if i == 24 else 1) * 256, 1024) and rows.min() == rows.max() == i
            ids.append(i)
        del x, rows
        assert ids == list(range(25)), "every element once, in order"
        gc.collect()  # the last element's tensor and the epoch's iterator go: every slot is free
        held.append(sum(_slot_bytes().values()))
    assert len(_slot_bytes()) == slots
    assert max(held) <= slots * 2 * mb, [h / mb for h in held]
    assert held[-1] <= held[0], "shared memory does not grow with epochs"


def test_bfloat16_arrays_survive_shared_memory() -> None:
    got = [float(x.numpy()[0, 0]) for x in tb.to_dataset(Bf16(), executor="process", workers=2)]
    assert got == [0.0, 1.0, 2.0, 3.0]


# ---- worker state -----------------------------------------------------------------------------------------


def test_each_element_gets_its_own_rng_seed_and_each_epoch_new_draws() -> None:
    ds = tb.to_dataset(Augmenting(), executor="process", workers=2, seed=5, cast_floats=None)
    values = [float(x.numpy()[0, 0]) for x in ds]
    assert len(set(values)) == len(values), "elements seeded alike would repeat each other's draws"
    again = [float(x.numpy()[0, 0]) for x in ds]
    assert again != values, "a new epoch gives new draws"


def test_unpicklable_source_with_process_executor_says_why_and_auto_avoids_processes() -> None:
    class Locked(Counting):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

    refusal = r"(?s)cannot be sent to worker processes.*Hint: use executor=\"thread\""
    with pytest.raises(tb.TfBridgeError, match=refusal):
        tb.to_dataset(Locked(), executor="process", workers=2, peek=1)
    assert tb.inspect(Locked()).executor["name"] != "process"


@pytest.mark.timeout(150)
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
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GOT [0, 1, 4, 9, 16, 25, 36, 49, 64]" in out.stdout
    assert "bootstrapping phase" not in out.stderr


# ---- executor="auto" --------------------------------------------------------------------------------------


def test_auto_choice_reflects_cpu_time_waiting_and_picklability() -> None:
    from tfbridge.executors import Cost, choose

    cpu = choose(Cost(0.16, 0.16, 8, 8 * 16_000))
    assert cpu.name == "process" and cpu.workers >= 2 and "CPU-bound" in cpu.reason
    waiting = choose(Cost(0.08, 0.001, 8))
    assert waiting.name == "thread" and waiting.workers >= 16
    queued = choose(Cost(0.08, 0.04, 8, queued_s=0.04))  # wall time spent waiting for a core is not waiting
    assert queued.name == "process"
    big = choose(Cost(0.08, 0.08, 8, 8 * 38_500_000))  # every route copies each element once: processes share it
    assert big.name == "process"
    unpicklable = choose(Cost(0.16, 0.16, 8, 1000), lambda: "the source does not pickle (lock)")
    assert unpicklable.name == "thread" and "does not pickle" in unpicklable.reason
    assert choose(Cost(0.0001, 0.0001, 8)).name == "serial"
    assert choose(Cost(1.0, 1.0, 8, sequential=True)).name == "serial"
    light = choose(Cost(0.008, 0.008, 8, 8 * 4096), cpus=2)  # 1 ms on 2 cores: passing elements back eats the gain
    assert light.name == "serial" and "too little" in light.reason


def test_auto_counts_worker_start_up_against_the_first_epoch() -> None:
    from tfbridge.executors import Cost, choose

    cpu_bound = Cost(0.16, 0.16, 8, 8 * 16_000)  # 20 ms of CPU per element
    short = choose(dataclasses.replace(cpu_bound, length=10))  # 0.2 s of work, 0.25 s to start a worker
    assert short.name == "serial" and "to start" in short.reason
    long = choose(dataclasses.replace(cpu_bound, length=10_000))
    assert long.name == "process" and "start-up included" in long.reason


class FourMsBatches(keras.utils.PyDataset):
    """10 batches, 4 ms of pure Python each: a whole epoch is 40 ms of work, and a worker process would first
    have to import Keras and TensorFlow to unpickle it."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> Any:
        end = time.thread_time() + 0.004
        while time.thread_time() < end:
            pass
        return np.full((32, 16), i, np.float32), np.full((32,), i % 2, np.int32)


def test_auto_keeps_a_short_keras_pydataset_out_of_worker_processes() -> None:
    from tfbridge.sources._python import IndexedTask

    choice = tb.inspect(FourMsBatches()).executor
    assert choice["name"] in ("serial", "thread"), choice
    started = executors.startup(executors.dumps_task(IndexedTask(FourMsBatches().__getitem__, None)))
    assert started.seconds > 1.0 and "tensorflow" in dict(started.imports)  # Keras brings its backend
    assert executors.startup(executors.dumps_task(IndexedTask(Burning(4, 1).__getitem__, None))).seconds < 1.0


def test_auto_picks_processes_for_a_cpu_heavy_source_with_many_elements() -> None:
    choice = tb.inspect(Burning(100_000, 20), batched=True).executor
    assert choice["name"] == "process" and choice["workers"] == executors.cores(), choice


def test_a_decision_for_a_source_stands_until_a_measurement_passes_the_threshold_clearly() -> None:
    from tfbridge.executors import Cost, choose

    class Source:
        pass

    def per_element(ms: float) -> Cost:  # CPU-bound, 1,000,000 elements: start-up does not matter
        return Cost(8 * ms / 1e3, 8 * ms / 1e3, 8, 8 * 4096, length=1_000_000)

    # the threshold (processes 1.5x faster per element on 2 cores) is near 1.35 ms here
    assert choose(per_element(1.2), cpus=2).name == "serial" and choose(per_element(1.6), cpus=2).name == "process"
    for first, far in ((0.7, 3.0), (3.0, 0.7)):
        source = Source()
        chosen = choose(per_element(first), source=source, cpus=2).name
        assert chosen == ("serial" if first < 1 else "process")
        for near in (1.2, 1.6):  # just either side of the threshold: the earlier choice stands
            assert choose(per_element(near), source=source, cpus=2).name == chosen
        assert choose(per_element(far), source=source, cpus=2).name != chosen  # far past it: the choice changes


def test_auto_chooses_the_same_executor_ten_times_while_both_cores_are_busy() -> None:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for make in (lambda: Burning(100_000, 5), lambda: Burning(100_000, 0.05), FourMsBatches):
            # a new object each time: measured anew, with no earlier decision to keep
            chosen = [tb.inspect(make(), batched=True).executor for _ in range(10)]
            names = [(c["name"], c["workers"]) for c in chosen]
            assert len(set(names)) == 1, [c["reason"] for c in chosen]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_auto_picks_threads_for_a_waiting_source_serial_for_a_cheap_one_and_native_for_arrays() -> None:
    class Waiting(Counting):
        def __getitem__(self, i: int) -> Any:
            time.sleep(0.005)  # stands for I/O: wall time without CPU time
            return super().__getitem__(i)

    assert tb.inspect(Waiting()).executor["name"] == "thread"
    assert tb.inspect(Counting()).executor["name"] == "serial"
    assert tb.inspect(np.zeros((3, 2))).executor["name"] == "native"


def test_threads_hold_at_most_about_a_gibibyte_of_big_elements_in_flight() -> None:
    from tfbridge.executors import Choice, ExecutorOptions, make

    options = ExecutorOptions("thread")
    threads = Choice("thread", 64, "as given")
    assert make(threads, options).in_flight == 128  # two elements a thread
    assert make(threads, options, element_bytes=4096).in_flight == 128
    assert make(threads, options, element_bytes=38.5e6).in_flight == 27  # 1 GiB of 38.5 MB batches
    assert make(threads, options, element_bytes=2e9).in_flight == 2  # never fewer than two


def test_big_cheap_elements_on_a_short_epoch_stay_serial_the_main_process_copies_each_one() -> None:
    import dataclasses

    from tfbridge.executors import Cost, choose

    big = Cost(8 * 0.0046, 8 * 0.0046, 8, 8 * 38_535_168)  # W3: 4.6 ms of CPU, 38.5 MB a batch
    assert choose(dataclasses.replace(big, length=60), cpus=2).name == "serial"
    assert choose(dataclasses.replace(big, length=1_000_000), cpus=2).name == "process"
    costly = Cost(8 * 0.03, 8 * 0.03, 8, 8 * 38_535_168, length=60)  # W4: 30 ms of CPU besides
    assert choose(costly, cpus=2).name == "process"

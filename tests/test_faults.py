"""Faults, for every executor (serial, thread, process; Ray's own are in test_ray.py): user code raising, worker
processes killed (mid-epoch, between epochs, by Ctrl-C), hung elements, early stops, lying lengths. Each fault
comes at its element, after every earlier element (each once), and the next epoch is whole. After every test the
``nothing_left_behind`` fixture (conftest.py) checks that no child process, shared-memory slot or tfbridge
thread outlives it."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _fault_sources import (
    BlocksOnceAt,
    Carrying,
    CountsEpochs,
    FailsOnceAt,
    FreezesMidReply,
    HangsOnceAt,
    KillsItselfAt,
    LyingLength,
    Shrinking,
    Slowish,
    UnreadableAt,
    WritesOnItsConnection,
    element,
)
from _leaks import alive, children, wait_exit

import tfbridge as tb

pytestmark = pytest.mark.timeout(90)  # tests that need longer say so

EXECUTORS = ["serial", "thread", "process"]
SIZES = ["small", "big"]  # small elements are chunked on their way into tf.data; big ones go one by one
_NEVER = Path("/nonexistent")  # FailsOnceAt(..., bad=-1, fixed=_NEVER): a source that never fails


def _first(x: Any) -> int:
    return int(x.numpy().flat[0])


def _consume(ds: Any) -> tuple[list[int], tf.errors.OpError | None]:
    """The element ids of one pass, and the error that ended it early (None: it ran to the end)."""
    got: list[int] = []
    try:
        for x in ds:
            got.append(_first(x))
    except tf.errors.OpError as exc:
        return got, exc
    return got, None


# ---- user code raising -------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_user_error_at_23_delivers_0_to_22_once_then_names_23_and_the_next_epoch_is_whole(
    executor: str, size: str, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    ds = tb.to_dataset(FailsOnceAt(40, 23, fixed, size == "big"), executor=executor, workers=2, peek=1)
    got, err = _consume(ds)
    assert got == list(range(23)), "every element before the failing one, each once, in order"
    assert err is not None
    assert "SourceError: element 23: ValueError: corrupt record 23" in str(err)
    assert "__getitem__" in str(err), "the source's own traceback comes along"
    fixed.touch()
    assert _consume(ds) == (list(range(40)), None)


def _gen_raising_at_fifth() -> Iterator[Any]:
    for i in range(10):
        if i == 4:
            raise ValueError("generator broke at its 5th element")
        yield element(i, False)


def test_user_error_in_a_generator_function_names_its_element_and_the_function() -> None:
    got, err = _consume(tb.to_dataset(_gen_raising_at_fifth, peek=2))
    assert got == [0, 1, 2, 3]
    assert err is not None
    assert "SourceError: element 4: ValueError: generator broke at its 5th element" in str(err)
    assert "_gen_raising_at_fifth" in str(err)


class _StopsAt12:
    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> Any:
        if i == 12:
            raise StopIteration
        return element(i, False)


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_stop_iteration_inside_getitem_is_a_source_error_not_the_end(executor: str) -> None:
    got, err = _consume(tb.to_dataset(_StopsAt12(), executor=executor, peek=1))
    assert got == list(range(12))
    assert err is not None and "SourceError: element 12: StopIteration" in str(err)


@pytest.mark.timeout(60)
def test_process_executor_source_error_keeps_index_and_traceback_across_the_process_boundary() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    ex = ProcessExecutor(2)
    try:
        with pytest.raises(tb.SourceError) as info:
            list(ex.imap(adapt(FailsOnceAt(10, 5, _NEVER), batched=True).task(None), range(10)))
        assert info.value.index == 5
        assert "corrupt record 5" in info.value.traceback and "__getitem__" in info.value.traceback
    finally:
        ex.close()


_SCRIPT = """\
import numpy as np
import tensorflow as tf

import tfbridge as tb


class Records:
    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i == 20:
            raise ValueError(f"corrupt record {i}")  # line 13
        return np.full((3,), i, np.float32)


if __name__ == "__main__":
    spec = tb.infer_spec(Records(), peek=2, batched=False)  # reads elements 0 and 39 only
    try:
        tb.validate(Records(), spec, batched=False, executor="process", workers=1)
    except tb.SourceError as err:
        print(err.traceback)
    try:
        for _ in tb.to_dataset(Records(), spec=spec, batched=False, executor="process", workers=1):
            pass
    except tf.errors.OpError as err:
        print(err.message)
"""


@pytest.mark.timeout(240)
def test_a_worker_traceback_names_the_file_and_line_of_a_class_defined_in_the_script_run(tmp_path: Path) -> None:
    """A class of ``__main__`` travels to worker processes by value; its traceback still names the script, the
    line and the source line, in SourceError.traceback and in the message inside tf.data."""
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frame = f'File "{script}", line 13, in __getitem__\n    raise ValueError(f"corrupt record {{i}}")  # line 13\n'
    assert result.stdout.count(frame) >= 2, result.stdout  # once from validate, at least once from tf.data
    assert "SourceError: element 20: ValueError: corrupt record 20" in result.stdout
    assert "<dynamic-code>" not in result.stdout


# ---- a worker process killed -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", SIZES)
def test_worker_sigkilled_mid_epoch_names_its_element_after_every_earlier_one_and_the_next_epoch_is_whole(
    size: str, tmp_path: Path
) -> None:
    tell, fixed, killed_mark = tmp_path / "pid", tmp_path / "fixed", tmp_path / "killed"
    os.mkfifo(tell)
    source = BlocksOnceAt(40, 23, tell, fixed, killed_mark, size == "big")
    ds = tb.to_dataset(source, executor="process", workers=2, peek=1)
    killed: list[int] = []

    def kill_the_worker_at_23() -> None:
        with open(tell) as fifo:  # opens once the worker holding element 23 writes its pid
            pid = int(fifo.read())
        fixed.touch()
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid, 30)
        killed.append(pid)
        killed_mark.touch()  # element 22, on the other worker, was still being made until now

    killer = threading.Thread(target=kill_the_worker_at_23, daemon=True, name="test-killer")
    killer.start()
    got, err = _consume(ds)
    killer.join()
    assert got == list(range(23)), "elements other workers made before 23 are delivered, each once"
    assert err is not None
    assert "WorkerDiedError: worker process" in str(err)
    assert f"(pid {killed[0]}) was killed by SIGKILL while producing element 23" in str(err)
    assert not alive(killed[0])
    assert _consume(ds) == (list(range(40)), None), "a fresh pool serves the next epoch"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("source_changes", [False, True], ids=["same-source", "source-changed-by-on-epoch-end"])
def test_workers_sigkilled_between_epochs_fail_one_pass_with_worker_died_then_the_next_is_whole(
    source_changes: bool,
) -> None:
    """The next pass finds its workers dead when it sends them the epoch's seed, or (when on_epoch_end changed
    the source) the source itself."""
    before = children()
    source = CountsEpochs(12, -1, _NEVER) if source_changes else FailsOnceAt(12, -1, _NEVER)
    ds = tb.to_dataset(source, executor="process", workers=2, peek=1)
    assert _consume(ds) == (list(range(12)), None)
    workers = children() - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid, 30)
    got, err = _consume(ds)
    assert got == [] and err is not None
    assert "WorkerDiedError: worker process" in str(err) and "was killed by SIGKILL between passes" in str(err)
    assert "none was lost" in str(err) and "element None" not in str(err)
    assert _consume(ds) == (list(range(12)), None)


@pytest.mark.timeout(60)
def test_process_executor_worker_killed_raises_worker_died_with_its_index_and_stops_the_pool_at_once() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    before = children()
    ex = ProcessExecutor(2)
    try:
        with pytest.raises(tb.WorkerDiedError, match=r"SIGKILL while producing element 20") as info:
            list(ex.imap(adapt(KillsItselfAt(40, 20), batched=True).task(None), range(40)))
        assert info.value.index == 20
        assert children() <= before, "a broken pool is shut down (its workers reaped) at once"
    finally:
        ex.close()


# ---- a hung element -----------------------------------------------------------------------------------------

_WHERE = {
    "serial": "the source's call for it had not returned",
    "thread": "a worker thread was still inside the source's call for it",
    "process": r"worker process \d \(pid (\d+)\) was still producing it and has been stopped",
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_hung_element_with_timeout_is_element_timeout_error_naming_it_and_the_next_epoch_is_whole(
    executor: str, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    release = None if executor == "process" else threading.Event()
    ds = tb.to_dataset(HangsOnceAt(30, 17, fixed, release), executor=executor, workers=2, peek=1, timeout=2)
    try:
        started = time.monotonic()
        got, err = _consume(ds)
        waited = time.monotonic() - started
        assert got == list(range(17))
        assert err is not None
        pattern = rf"ElementTimeoutError: element 17 was not ready within timeout=2 s: {_WHERE[executor]}\."
        found = re.search(pattern, str(err))
        assert found, str(err)[:1000]
        assert "Hint: look for a hang in the source at that element" in str(err)
        assert waited < 30, "the timeout ends the wait, not the hang"
        if executor == "process":
            assert not alive(int(found.group(1))), "the hung worker was stopped"
        fixed.touch()
        assert _consume(ds) == (list(range(30)), None)
    finally:
        if release is not None:
            release.set()  # the hung call returns; the fixture sees its thread end


@pytest.mark.timeout(60)
def test_hung_stream_with_timeout_is_element_timeout_error_naming_it() -> None:
    release = threading.Event()

    def rows() -> Iterator[np.ndarray]:
        for i in range(20):
            if i == 9 and not release.is_set():
                release.wait()
            yield element(i, False)

    ds = tb.to_dataset(rows, peek=1, timeout=2)
    try:
        got, err = _consume(ds)
        assert got == list(range(9)) and err is not None
        assert (
            "ElementTimeoutError: element 9 was not ready within timeout=2 s: the source's iterator had not "
            "produced it." in str(err)
        )
    finally:
        release.set()
    assert _consume(ds) == (list(range(20)), None)


# ---- a worker's connection: frozen half-way through a reply, bytes that are not a reply --------------------


def _frozen(tell: Path) -> tuple[int, float]:
    """The pid of the worker that froze itself, and when (wall clock)."""
    pid, when = tell.read_text().split()
    return int(pid), float(when)


def _wait_frozen(tell: Path) -> int:
    """The pid of the worker that froze itself, once it is stopped (state T)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if tell.exists():
            pid, _ = _frozen(tell)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                return pid
        time.sleep(0.01)  # polls for another process's state, with a deadline
    raise AssertionError("the worker never froze")


_HALF_SENT = r"had sent ([\d,]+) of the ([\d,]+) bytes of its reply"


@pytest.mark.timeout(90)
def test_worker_frozen_half_way_through_a_big_reply_is_element_timeout_error_within_timeout_then_a_whole_epoch(
    tmp_path: Path,
) -> None:
    """Half of a 3.4 MB reply (a nested Python structure, no array) is on the socket when the worker stops: the
    main process keeps the half, keeps watching the time, and stops the worker when ``timeout=`` is up."""
    tell, fixed = tmp_path / "frozen", tmp_path / "fixed"
    source = FreezesMidReply(20, 11, 200_000, tell, fixed)
    ds = tb.to_dataset(source, executor="process", workers=2, batched=True, peek=1, timeout=3)
    got, err = _consume(ds)
    failed_at = time.time()
    assert got == list(range(11))
    assert err is not None
    pid, frozen_at = _frozen(tell)
    pattern = rf"ElementTimeoutError: element 11 was not ready within timeout=3 s: worker process \d \(pid {pid}\) "
    found = re.search(pattern + _HALF_SENT + " and has been stopped", str(err))
    assert found, str(err)[:1000]
    sent, size = (int(g.replace(",", "")) for g in found.groups())
    assert size > 3_000_000 and sent == size // 2, "half of the reply, length first, had come in"
    assert failed_at - frozen_at < 3 + 2
    assert wait_exit(pid, 10), "the frozen worker was killed"
    fixed.touch()
    assert _consume(ds) == (list(range(20)), None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("sent", "doing"),
    [(None, _HALF_SENT), (2, "had begun its reply")],
    ids=["half-the-reply", "two-bytes-of-its-length"],
)
def test_a_worker_frozen_mid_reply_is_element_timeout_error_saying_how_much_had_come(
    sent: int | None, doing: str, tmp_path: Path
) -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    tell = tmp_path / "frozen"
    ex = ProcessExecutor(2, timeout=2)
    try:
        task = adapt(FreezesMidReply(12, 7, 100_000, tell, _NEVER, sent), batched=True).task(None)
        got: list[int] = []
        with pytest.raises(tb.ElementTimeoutError) as info:
            for x in ex.imap(task, range(12)):
                got.append(int(x[0]))
        assert got == list(range(7))
        pid, _ = _frozen(tell)
        where = rf"worker process \d \(pid {pid}\) {doing} and has been stopped"
        assert re.search(rf"element 7 was not ready within timeout=2 s: {where}", str(info.value)), str(info.value)
        assert info.value.index == 7
    finally:
        ex.close()


@pytest.mark.timeout(60)
def test_a_pass_stopped_early_while_a_worker_is_frozen_mid_reply_stops_it_and_the_next_pass_is_whole(
    tmp_path: Path,
) -> None:
    """The half-received reply belongs to the stopped worker: the next pass, on fresh workers, never sees it."""
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    tell, fixed = tmp_path / "frozen", tmp_path / "fixed"
    ex = ProcessExecutor(2, timeout=2)
    try:
        # half of a 60 KB reply: it fits in the socket's buffer while this pass is not reading
        task = adapt(FreezesMidReply(20, 5, 5_000, tell, fixed), batched=True).task(None)
        it = ex.imap(task, range(20))
        assert [int(next(it)[0]) for _ in range(3)] == [0, 1, 2]  # element 5 has been handed to a worker
        pid = _wait_frozen(tell)
        it.close()
        fixed.touch()
        assert [int(x[0]) for x in ex.imap(task, range(20))] == list(range(20))
        assert pid not in ex.pids() and wait_exit(pid, 10), "the frozen worker was killed and replaced"
    finally:
        ex.close()


@pytest.mark.timeout(120)
def test_a_worker_frozen_between_passes_fails_the_next_pass_in_bounded_time_when_its_source_cannot_be_sent() -> None:
    """The next pass sends each worker its (changed) 4 MB source: more than the socket holds, so the send to the
    frozen worker cannot finish. It fails after ``timeout`` (then the pool is shut down: a few seconds more), and
    the pass after it runs on fresh workers."""
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    ex = ProcessExecutor(2, timeout=2)
    try:
        assert [int(x[0]) for x in ex.imap(adapt(Carrying(8, 1), batched=True).task(None), range(8))] == list(range(8))
        pid = ex.pids()[0]
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        stopped = rf"worker process 0 \(pid {pid}\) stopped answering between passes, .*none was lost"
        with pytest.raises(tb.WorkerDiedError, match=stopped):
            list(ex.imap(adapt(Carrying(8, 2), batched=True).task(None), range(8)))
        assert time.monotonic() - started < 2 + 30
        assert wait_exit(pid, 10), "the frozen worker was killed"
        assert [int(x[0]) for x in ex.imap(adapt(Carrying(8, 3), batched=True).task(None), range(8))] == list(range(8))
    finally:
        ex.close()


def _frame(message: bytes) -> bytes:
    """``message`` as a worker sends it: its length first."""
    return struct.pack("!i", len(message)) + message


_NOT_A_REPLY = {  # bytes written on the connection just before element 11's reply -> what the error says
    "garbage": (
        b"this is not a message",
        r"a message that does not start as a pickle does \(its first bytes: "
        r"b'this is not '\)",
    ),
    "negative-length": (struct.pack("!i", -5), r"a message whose length prefix says -5 bytes"),
    "fake-huge-length": (
        struct.pack("!i", 2**31 - 1),
        r"a message that does not start as a pickle does \(its "
        r"first bytes: b'\\x7f\\xff\\xff\\xff\\x00",
    ),
    "fake-huge-long-length": (
        b"\xff\xff\xff\xff" + struct.pack("!Q", 2**62),
        r"a message that does not start as "
        r"a pickle does \(its first bytes: b'\\xff\\xff\\xff\\xff@\\x00",
    ),
    "not-a-pickle": (_frame(b"\x80\x05garbage."), r"a message that does not unpickle \(UnpicklingError: "),
    "cut-short": (_frame(b"\x80\x05\x95"), r"a message of 3 bytes that does not end as a pickle does"),
    "not-a-reply": (_frame(pickle.dumps("hello")), r"a message that is not a reply: 'hello'"),
    "another-element": (
        _frame(pickle.dumps(("ok", 999, b"", False))),
        r"a reply for element 999, which it was not making",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(_NOT_A_REPLY))
def test_bytes_on_a_worker_connection_that_are_not_a_reply_are_worker_died_error_naming_worker_and_element(
    case: str,
) -> None:
    """No timeout is given: nothing may wait for the bytes a false length promises. The error comes at element
    11's place, after every earlier element; the worker is stopped and the next pass runs on fresh workers."""
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    data, what = _NOT_A_REPLY[case]
    before = children()
    ex = ProcessExecutor(2)
    try:
        task = adapt(WritesOnItsConnection(20, 11, data, _NEVER), batched=True).task(None)
        got: list[int] = []
        with pytest.raises(tb.WorkerDiedError) as info:
            for x in ex.imap(task, range(20)):
                got.append(int(x[0]))
        assert got == list(range(11))
        assert info.value.index == 11
        pattern = (
            rf"worker process \d \(pid (\d+)\) sent {what}[^\n]* while producing element 11, and has been stopped\.\n"
            "Hint: something in the worker process wrote to its connection with the main process"
        )
        found = re.search(pattern, str(info.value))
        assert found, str(info.value)
        assert wait_exit(int(found.group(1)), 10)
        assert children() <= before, "the pool was shut down"
        task = adapt(WritesOnItsConnection(20, -1, data, _NEVER), batched=True).task(None)
        assert [int(x[0]) for x in ex.imap(task, range(20))] == list(range(20))
    finally:
        ex.close()


@pytest.mark.timeout(90)
def test_a_fake_length_on_a_worker_connection_inside_tf_data_is_a_clear_error_then_a_whole_epoch(
    tmp_path: Path,
) -> None:
    fixed = tmp_path / "fixed"
    source = WritesOnItsConnection(30, 17, struct.pack("!i", 2**31 - 1), fixed)
    ds = tb.to_dataset(source, executor="process", workers=2, batched=True, peek=1)
    got, err = _consume(ds)
    assert got == list(range(17))
    assert err is not None
    assert re.search(
        r"WorkerDiedError: worker process \d \(pid \d+\) sent a message that does not start as a "
        r"pickle does .* while producing element 17, and has been stopped",
        str(err),
    ), str(err)[:1000]
    assert "UnpicklingError" not in str(err)
    fixed.touch()
    assert _consume(ds) == (list(range(30)), None)


@pytest.mark.timeout(60)
def test_a_reply_the_main_process_cannot_read_is_a_source_error_naming_element_and_worker() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    ex = ProcessExecutor(2)
    try:
        got: list[int] = []
        with pytest.raises(tb.SourceError) as info:
            for x in ex.imap(adapt(UnreadableAt(12, 6), batched=True).task(None), range(12)):
                got.append(int(x["x"][0]))
        assert got == list(range(6)) and info.value.index == 6
        assert re.match(
            r"element 6: its result, sent by worker process \d \(pid \d+\), cannot be read in the main process: "
            r"ModuleNotFoundError: No module named 'only_in_workers'\nHint: a result should hold numpy arrays",
            str(info.value),
        ), str(info.value)
    finally:
        ex.close()


@pytest.mark.timeout(60)
def test_an_error_reply_that_holds_no_exception_is_a_source_error_naming_element_and_worker() -> None:
    from tfbridge.executors import ProcessExecutor
    from tfbridge.sources import adapt

    fake = _frame(pickle.dumps(("err", 6, pickle.dumps("nope"), False)))
    ex = ProcessExecutor(2)
    try:
        got: list[int] = []
        with pytest.raises(tb.SourceError) as info:
            for x in ex.imap(adapt(WritesOnItsConnection(12, 6, fake, _NEVER), batched=True).task(None), range(12)):
                got.append(int(x[0]))
        assert got == list(range(6)) and info.value.index == 6
        assert re.fullmatch(r"element 6: worker process \d \(pid \d+\) sent 'nope' as its error", str(info.value))
    finally:
        ex.close()


# ---- early stops ------------------------------------------------------------------------------------------


class _TrainingDiverged(RuntimeError):
    pass


def _train(ds: Any, seen: list[int], fail_after: int) -> None:
    for step, x in enumerate(ds):
        seen.append(_first(x))
        if step + 1 == fail_after:
            raise _TrainingDiverged(f"loss is NaN at step {step}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["break", "take", "exception"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_early_stop_then_the_next_epoch_is_whole_and_nothing_is_left(executor: str, how: str) -> None:
    source = Slowish(60)
    ds = tb.to_dataset(source, executor=executor, workers=2, peek=1)
    seen: list[int] = []
    if how == "break":
        for x in ds:
            seen.append(_first(x))
            if len(seen) == 5:
                break
    elif how == "take":
        seen = [_first(x) for x in ds.take(5)]
    else:
        with pytest.raises(_TrainingDiverged, match="loss is NaN at step 4"):
            _train(ds, seen, fail_after=5)
    assert seen == [0, 1, 2, 3, 4]
    ends = source.ends
    assert _consume(ds) == (list(range(60)), None)
    assert source.ends == ends + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_early_stop_with_a_live_iterator_kept_then_dropped_leaves_nothing(executor: str) -> None:
    ds = tb.to_dataset(Slowish(60), executor=executor, workers=2, peek=1)
    it = iter(ds)
    assert [_first(next(it)) for _ in range(3)] == [0, 1, 2]
    del it  # a pass abandoned mid-way: its workers and threads stop; the fixture checks
    assert _consume(ds) == (list(range(60)), None)


# ---- a source whose __len__ lies -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_longer_than_the_data_gives_every_real_element_then_source_error_at_the_first_missing_one(
    executor: str,
) -> None:
    ds = tb.to_dataset(LyingLength(real=30, says=34), executor=executor, workers=2, peek=1)
    got, err = _consume(ds)
    assert got == list(range(30))
    assert err is not None
    assert "SourceError: element 30: IndexError: index 30 out of range" in str(err)


def test_len_longer_than_the_data_is_caught_by_the_peek_before_any_pipeline_exists() -> None:
    with pytest.raises(tb.SourceError, match=r"element 33: IndexError: index 33 out of range") as info:
        tb.to_dataset(LyingLength(real=30, says=34))
    assert info.value.index == 33


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_shorter_than_the_data_gives_exactly_len_elements_each_epoch(executor: str) -> None:
    ds = tb.to_dataset(LyingLength(real=30, says=25), executor=executor, workers=2, peek=1)
    assert int(ds.cardinality()) == 25
    for _ in range(2):
        assert _consume(ds) == (list(range(25)), None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_len_that_changes_between_epochs_is_a_tfbridge_error_naming_both_lengths(executor: str) -> None:
    ds = tb.to_dataset(Shrinking(), executor=executor, workers=2, peek=1)
    assert _consume(ds) == (list(range(10)), None)
    got, err = _consume(ds)
    assert got == [] and err is not None
    text = str(err)
    assert "TfBridgeError: len() of the source" in text
    assert "was 10 when the dataset was made and is 7 now" in text
    assert "Hint: make a new dataset with tb.to_dataset" in text
    assert "expected to contain" not in text, "not TensorFlow's cardinality error"


# ---- Ctrl-C in a training script --------------------------------------------------------------------------


def _set_child_subreaper(on: bool) -> None:
    """While on, orphaned grandchildren are re-parented to this process, so the test can wait for them."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(pr_set_child_subreaper, int(on), 0, 0, 0) == 0


_CTRL_C_SCRIPT = """
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


@pytest.mark.timeout(150)
def test_ctrl_c_in_a_training_script_leaves_no_worker_behind(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(_CTRL_C_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def as_in_a_terminal() -> None:  # background jobs inherit an ignored SIGINT; a terminal's do not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    workers: list[int] = []
    interrupted = False
    return_code: int | None = None
    err = ""
    _set_child_subreaper(True)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=as_in_a_terminal,  # runs before exec, no threads involved
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("WORKERS"):
                    workers = [int(p) for p in line.split()[1:]]
                    break
            if workers:
                # Ctrl-C; a second one if the script is still running 3 s later, as a user presses it again:
                # TensorFlow's eager iterator can swallow a Ctrl-C (when the signal lands while the main thread
                # waits in GetNext, the KeyboardInterrupt is raised inside tf's Executor.__del__ and printed as
                # "Exception ignored"; TensorFlow's own behaviour, plain from_generator included). What tfbridge
                # owns is that no worker outlives its process, however it ends: the waits below check it.
                for wait_s in (3, 20):
                    proc.send_signal(signal.SIGINT)
                    try:
                        _, err = proc.communicate(timeout=wait_s)
                    except subprocess.TimeoutExpired:
                        continue
                    interrupted = True
                    return_code = proc.returncode
                    break
        finally:
            if return_code is None:  # not ended by the Ctrl-C (or the test failed before): end it, read it all
                proc.kill()
                _, err = proc.communicate()
        assert len(workers) == 2, f"the script printed no WORKERS line: {err[-2000:]}"
        for pid in workers:  # re-parented to this process once their parent is gone; each must exit by itself
            with contextlib.suppress(ChildProcessError):  # already reaped
                os.waitpid(pid, 0)  # blocks until it has exited (the test's timeout guards a hang)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        if interrupted:  # ended by the Ctrl-C: Python's KeyboardInterrupt, or (a second Ctrl-C during the first's
            # unwinding, on a loaded machine) the signal itself
            assert "KeyboardInterrupt" in err or return_code in (-signal.SIGINT, 128 + signal.SIGINT), (
                f"exit status {return_code}: {err[-2000:]}"
            )
    finally:
        _set_child_subreaper(False)


class _HookFails:
    def __init__(self, hook: str) -> None:
        self.hook = hook

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        return np.full((2,), i, np.int64)

    def on_epoch_begin(self) -> None:
        if self.hook == "on_epoch_begin":
            raise RuntimeError("cannot reshuffle the index")

    def on_epoch_end(self) -> None:
        if self.hook == "on_epoch_end":
            raise RuntimeError("cannot reshuffle the index")


@pytest.mark.parametrize("hook", ["on_epoch_begin", "on_epoch_end"])
def test_a_failing_epoch_hook_is_named_in_the_error(hook: str) -> None:
    ds = tb.to_dataset(_HookFails(hook), batched=False, executor="serial")
    got, err = _consume(ds)
    assert got == ([] if hook == "on_epoch_begin" else list(range(6))), "the hook runs before or after the elements"
    assert err is not None
    assert f"the source's {hook}(): RuntimeError: cannot reshuffle the index" in str(err)


def test_a_failing_on_epoch_end_under_fit_is_said_in_a_warning() -> None:
    """fit stops at the epoch's known length and never asks for the step that raises the hook's error: the
    warning given when the hook fails is what the user sees."""
    import warnings

    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.ends = 0

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> Any:
            return np.full((2, 3), i, np.float32), np.zeros(2, np.float32)

        def on_epoch_end(self) -> None:
            self.ends += 1
            raise RuntimeError("cannot reshuffle the index")

    source = Batches()
    ds = tb.to_dataset(source, executor="serial")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ds, epochs=2, verbose=0)
    said = [str(w.message) for w in caught if issubclass(w.category, tb.TfBridgeWarning)]
    assert source.ends == 2
    assert len(said) == 2, said
    assert said[0].startswith("the source's on_epoch_end(): RuntimeError: cannot reshuffle the index")
    assert "a loop that stops at the epoch's length, as Keras's fit does, never asks for that step" in said[0]

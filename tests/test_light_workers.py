"""Light workers: a Keras PyDataset travels to worker processes as a light copy (workers import neither Keras nor
TensorFlow unless the source's own code uses them) and big numpy arrays the source holds are shared read-only
with the workers, not copied into each. Elements are the same as the serial executor's."""

from __future__ import annotations

import os
import pickle
import signal
import time
from typing import Any

import _keras_sources as ks
import keras
import numpy as np
import pytest
import tensorflow as tf
from _leaks import memfds

import tfbridge as tb
from tfbridge import executors
from tfbridge.errors import SourceError
from tfbridge.executors import _light, _shared, processes
from tfbridge.executors.processes import ProcessExecutor, dumps_task
from tfbridge.sources.indexed import IndexedSource

pytestmark = pytest.mark.timeout(240)

_LIGHT_RSS_BYTES = 150 * 2**20
_BIG_BYTES = 64 * 2**20  # the issue measured 400 MB; 64 MB keeps the test light and is well above the threshold


def _status(pid: int) -> dict[str, int]:
    """Memory figures of ``pid`` from /proc/<pid>/status, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssShmem"):
                out[name] = int(value.split()[0]) * 1024
    return out


def _task(obj: Any) -> Any:
    return IndexedSource(obj, True).task(None)


def _serial(obj: Any, n: int) -> list[Any]:
    return [obj[i] for i in range(n)]


def _assert_same(a: Any, b: Any) -> None:
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_pydataset_worker_imports_neither_keras_nor_tensorflow_and_stays_small() -> None:
    ex = ProcessExecutor(2)
    try:
        started = time.monotonic()
        results = ex.imap(_task(ks.NumpyBatches()), range(12))
        first = next(results)
        first_s = time.monotonic() - started
        rest = list(results)
        pids = ex.pids()
        assert {int(e["pid"]) for e in [first, *rest]} == set(pids)
        assert not any(bool(e["heavy"]) for e in [first, *rest]), "a worker imported TensorFlow or Keras"
        for pid in pids:
            rss = _status(pid)["VmRSS"]
            assert rss < _LIGHT_RSS_BYTES, f"worker {pid} holds {rss / 2**20:.0f} MB"
        # about 0.4 s on an idle machine; a Keras import takes 3-8 s (the bound leaves room for a busy machine)
        assert first_s < 3.0, f"the first element took {first_s:.1f} s"
        for i, element in enumerate([first, *rest]):
            np.testing.assert_array_equal(element["x"], ks.NumpyBatches()[i]["x"])
    finally:
        ex.close()


def test_the_task_names_neither_keras_nor_the_users_module() -> None:
    payload = dumps_task(_task(ks.NumpyBatches()))
    modules = executors.pickled_modules(payload)
    assert not {m for m in modules if m.split(".")[0] in ("keras", "tensorflow", "_keras_sources")}, modules
    before = executors.startup(payload)
    processes._LIGHT = False
    try:
        heavy = executors.startup(dumps_task(_task(ks.NumpyBatches())))
    finally:
        processes._LIGHT = True
    assert "keras" in dict(heavy.imports) and "keras" not in dict(before.imports)
    assert before.seconds < heavy.seconds


@pytest.mark.parametrize("shuffle", [False, True])
def test_light_copy_gives_the_serial_elements_over_epochs(shuffle: bool) -> None:
    """super(), the Keras base's members (workers, num_batches, max_queue_size) and on_epoch_end as in Keras."""
    runs = {}
    for name in ("serial", "process"):
        ds = tb.to_dataset(ks.Shuffled(), executor=name, workers=2, shuffle=shuffle, seed=5, batched=False)
        runs[name] = [[tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds] for _ in range(3)]
    for epoch_serial, epoch_process in zip(runs["serial"], runs["process"], strict=True):
        assert len(epoch_process) == 8
        for a, b in zip(epoch_serial, epoch_process, strict=True):
            b = dict(b)
            assert not b.pop("heavy"), "a worker imported TensorFlow or Keras"
            a.pop("heavy")
            a.pop("pid")
            b.pop("pid")
            _assert_same(a, b)
    assert [int(e["meta"][0]) for e in runs["process"][0]] == [3] * 8  # workers=3 given to PyDataset.__init__


def test_a_getitem_that_uses_keras_still_works() -> None:
    ex = ProcessExecutor(1)
    try:
        got = list(ex.imap(_task(ks.UsesKeras()), range(3)))
    finally:
        ex.close()
    for element, expected in zip(got, _serial(ks.UsesKeras(), 3), strict=True):
        _assert_same(element, expected)
        assert bool(element["keras"])  # imported in the worker, because the source's code uses it


def test_a_getitem_calling_the_keras_base_raises_as_in_keras() -> None:
    with pytest.raises(NotImplementedError):
        ks.CallsBaseGetitem()[0]
    ex = ProcessExecutor(1)
    try:
        with pytest.raises(SourceError, match=r"element 0: NotImplementedError") as info:
            list(ex.imap(_task(ks.CallsBaseGetitem()), range(2)))
    finally:
        ex.close()
    assert "_keras_sources.py" in str(info.value), "the traceback names the user's file"


def test_the_stand_in_behaves_as_the_keras_base() -> None:
    light_class = pickle.loads(dumps_task(ks.NumpyBatches))  # as the workers (and Ray tasks) rebuild it
    assert _light.keras_base(ks.NumpyBatches) is keras.utils.PyDataset
    assert not issubclass(light_class, keras.utils.PyDataset), "documented: isinstance is False in workers"
    assert light_class.__qualname__ == "NumpyBatches" and light_class.__module__ == "_keras_sources"
    for cls in (ks.NumpyBatches, light_class):
        made = cls(n=5, workers=4, use_multiprocessing=True, max_queue_size=7)
        assert (made.workers, made.use_multiprocessing, made.max_queue_size, made.num_batches) == (4, True, 7, 5)
        assert len(list(made)) == 5
        made.on_epoch_begin()
        made.on_epoch_end()
        bare = cls.__new__(cls)  # __init__ (and so PyDataset.__init__) never ran
        bare.n = 2
        with pytest.warns(UserWarning, match=r"super\(\).__init__\(\*\*kwargs\)"):
            assert bare.workers == 1
    # every member of the Keras base has its stand-in (else no light copy is made)
    assert not set(vars(keras.utils.PyDataset)) - set(vars(_light.PyDatasetStandIn)) - {
        "__module__", "__doc__", "__dict__", "__weakref__", "_api_export_path", "_api_export_symbol_id"
    }


def test_a_source_whose_light_copy_fails_travels_as_before() -> None:
    """A method using an unpicklable module global, or a class with __slots__: plain cloudpickle, same elements."""
    for obj in (ks.UsesModuleLock(), ks.Slotted()):
        payload = dumps_task(_task(obj))
        assert "_keras_sources" in executors.pickled_modules(payload)
    ex = ProcessExecutor(1)
    try:
        got = list(ex.imap(_task(ks.UsesModuleLock()), range(3)))
        slotted = list(ex.imap(_task(ks.Slotted()), range(2)))
    finally:
        ex.close()
    assert all(bool(e["keras"]) for e in got)  # the worker imported the module, and Keras with it
    for element, expected in zip(got, _serial(ks.UsesModuleLock(), 3), strict=True):
        _assert_same(element, expected)
    for element, expected in zip(slotted, _serial(ks.Slotted(), 2), strict=True):
        _assert_same(element, expected)


def test_modules_pickled_by_value_for_the_dump_are_registered_for_it_only() -> None:
    import cloudpickle

    dumps_task(_task(ks.NumpyBatches()))
    assert "_keras_sources" not in cloudpickle.list_registry_pickle_by_value()


def _big() -> np.ndarray:
    return np.arange(_BIG_BYTES // 8, dtype=np.float64).reshape(-1, 64)


def _array_fds() -> set[str]:
    return {fd for fd in memfds() if "tfbridge-array" in fd}


def test_a_big_array_is_shared_with_the_workers_not_copied() -> None:
    big = _big()
    source = ks.HoldsArrays(big)
    ex = ProcessExecutor(2)
    try:
        got = list(ex.imap(_task(source), range(6)))
        assert len(_array_fds()) == 2, "one memory file for the array, one for the half of it in a list"
        for pid in ex.pids():
            status = _status(pid)
            assert status["VmRSS"] < _LIGHT_RSS_BYTES and status["RssAnon"] < _BIG_BYTES // 2, status
        digest = ex._pools[0].task[1]  # type: ignore[index]
        again = list(ex.imap(_task(source), range(6)))
        assert ex._pools[0].task[1] == digest, "an unchanged array is not written or sent again"  # type: ignore[index]
        big[3000] = -7.0  # changed in place between passes: the workers see the change
        changed = list(ex.imap(_task(source), range(6)))
        assert ex._pools[0].task[1] != digest  # type: ignore[index]
    finally:
        ex.close()
    assert not _array_fds()
    _assert_same(got, again)
    for element, expected in zip(got, _serial(ks.HoldsArrays(_big()), 6), strict=True):
        assert not bool(element.pop("writeable")) and bool(expected.pop("writeable"))
        _assert_same(element, expected)
    assert changed[3]["row"].tolist() == [-7.0] * 64
    np.testing.assert_array_equal(changed[2]["row"], got[2]["row"])


def test_writing_into_a_shared_array_says_it_is_read_only_and_what_to_do() -> None:
    source = ks.WritesIntoArray(_big())
    ex = ProcessExecutor(1)
    try:
        with pytest.raises(SourceError) as info:
            list(ex.imap(_task(source), range(2)))
    finally:
        ex.close()
    message = str(info.value)
    assert message.startswith("element 0: ValueError: assignment destination is read-only\nHint: arrays of 16 MB")
    assert "shared read-only with the worker processes" in message and "executor='thread'" in message
    assert "_keras_sources.py" in message  # the traceback follows


def test_a_small_array_is_not_shared_and_the_plain_path_shares_nothing() -> None:
    small = ks.HoldsArrays(np.ones((1000 * 6, 4)))
    big = ks.HoldsArrays(_big())
    ex = ProcessExecutor(1)
    try:
        list(ex.imap(_task(small), range(6)))
        assert not _array_fds()
        processes._LIGHT = False
        try:
            got = list(ex.imap(_task(big), range(6)))
            assert not _array_fds()
        finally:
            processes._LIGHT = True
    finally:
        ex.close()
    assert all(bool(e["writeable"]) for e in got)  # each worker's own copy, as before


def test_shared_arrays_keep_layout_and_dtype() -> None:
    """Fortran order, a non-contiguous view and a structured dtype come back equal, read-only."""
    base = np.arange(_BIG_BYTES // 4, dtype=np.int32).reshape(-1, 512)
    arrays = [np.asfortranarray(base), base[:, ::2], np.zeros(_BIG_BYTES // 16, dtype=[("a", "<i4"), ("b", "<f8")])]
    arrays[2]["a"] = 3
    store = _shared.SharedArrays()
    dump = _shared.Dump(store)
    try:
        reduced = [dump.reduce(a) for a in arrays]
        fds = [os.dup(fd) for fd in dump.fds]
        try:
            _shared._LOADING.fds = fds
            rebuilt = [rebuild(*args) for rebuild, args in reduced]
        finally:
            _shared._LOADING.fds = None
            for fd in fds:
                os.close(fd)
        for original, copy in zip(arrays, rebuilt, strict=True):
            assert copy.dtype == original.dtype and copy.shape == original.shape
            assert copy.flags.f_contiguous == original.flags.f_contiguous
            assert not copy.flags.writeable
            np.testing.assert_array_equal(copy, original)
            with pytest.raises(ValueError, match="read-only"):
                copy[0] = copy[1]
        del rebuilt, copy
    finally:
        dump.release()
    assert not _array_fds()


def test_a_task_with_shared_arrays_loaded_without_its_files_says_so() -> None:
    store = _shared.SharedArrays()
    dump = _shared.Dump(store)
    try:
        rebuild, args = dump.reduce(_big())
        with pytest.raises(pickle.UnpicklingError, match=r"names shared array 0, but 0 shared memory files came"):
            rebuild(*args)
        other = os.memfd_create("tfbridge-array-test")
        try:
            _shared._LOADING.fds = [other]
            with pytest.raises(pickle.UnpicklingError, match=r"is not the one its pickle names"):
                rebuild(*args)
        finally:
            _shared._LOADING.fds = None
            os.close(other)
    finally:
        dump.release()


def test_a_source_that_never_called_the_base_init_still_works() -> None:
    bare = ks.Shuffled.__new__(ks.Shuffled)  # PyDataset.__init__ never ran: `workers` warns and says 1, as in Keras
    bare.n, bare.rows, bare.order = 2, 1, np.array([1, 0])
    ex = ProcessExecutor(1)
    try:
        got = list(ex.imap(_task(bare), range(2)))
    finally:
        ex.close()
    with pytest.warns(UserWarning):
        expected = _serial(bare, 2)
    for element, want in zip(got, expected, strict=True):
        assert element["meta"].tolist() == want["meta"].tolist() == [1, 2, 10]
        np.testing.assert_array_equal(element["x"], want["x"])


def test_a_forked_child_closes_its_copies_of_the_shared_array_files() -> None:
    ex = ProcessExecutor(1)
    try:
        list(ex.imap(_task(ks.HoldsArrays(_big())), range(2)))
        assert len(_array_fds()) == 2
        pid = os.fork()
        if pid == 0:  # the child: the fork handler let go of the parent's pools and files
            os._exit(0 if not _array_fds() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the forked child kept the shared array files open"
        assert len(_array_fds()) == 2, "the parent's files are untouched"
        got = list(ex.imap(_task(ks.HoldsArrays(_big())), range(2)))
        assert got[1]["row"][0] == 64000.0
    finally:
        ex.close()


def test_a_child_forked_while_a_task_is_pickled_can_pickle_tasks_of_its_own() -> None:
    """Another thread of the parent (a worker warm-up, a pass) may hold the pickling lock at the fork: the child
    gets a lock of its own instead of one nobody there will ever release."""
    from tfbridge.executors import processes

    with processes._BY_VALUE_LOCK:  # as a warm-up thread holds it while it pickles the source
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a child that hangs dies, and the parent sees it
            ok = processes._BY_VALUE_LOCK.acquire(timeout=5)
            if ok:
                processes._BY_VALUE_LOCK.release()
            os._exit(0 if ok and processes.dumps_task(_task(ks.HoldsArrays(_big()))) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child could not take the pickling lock"

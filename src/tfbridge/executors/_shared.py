"""Large numpy arrays a source holds, shared read-only with worker processes instead of copied into each.

When the task is pickled for process workers, every numpy array of at least ``SHARED_ARRAY_MIN_BYTES`` it holds
(an attribute of the source, or nested in its lists, dicts and tuples) is written once into an anonymous memory
file (``memfd``, sealed against writes once written) and travels as a small :class:`SharedArray` id in the
pickle. The memory files go to each worker with the task, over its socket (``SCM_RIGHTS``); the worker maps
each read-only and rebuilds the array on the mapping: one copy in shared memory for every worker, where each
worker had its own copy before. A worker writing into such an array gets numpy's read-only error.

The main process keeps one memory file per array while a pool's current task uses it (:class:`SharedArrays`);
at the next pass it is reused when the array holds the same bytes (compared, not assumed) and written anew when
the array changed. The files close when no pool's task uses them any more, and when the executor closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

SHARED_ARRAY_MIN_BYTES = 16 * 1024 * 1024
_COMPARE_CHUNK_BYTES = 16 * 1024 * 1024
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


@dataclass(frozen=True)
class SharedArray:
    """What a task's pickle holds for a shared array: which of the files sent with the task holds it,
    and how to read it. ``inode`` tells the file apart from any other (a changed array gets a new file, so the
    task's pickle changes and workers receive it again)."""

    fd_index: int
    inode: int
    shape: tuple[int, ...]
    dtype: np.dtype
    order: str


class _Entry:
    """One array's memory file in the main process, used by ``users`` pools' current tasks."""

    def __init__(self, array: np.ndarray, fd: int, order: str) -> None:
        self.array = array  # held: its id stays its own while the file is in use
        self.fd, self.order, self.users = fd, order, 0
        self.shape, self.dtype = tuple(array.shape), array.dtype  # as written (an array's shape can be set)
        self.inode = os.fstat(fd).st_ino


def wants_sharing(obj: Any) -> bool:
    return type(obj) is np.ndarray and not obj.dtype.hasobject and obj.nbytes >= SHARED_ARRAY_MIN_BYTES


def _order(array: np.ndarray) -> str:
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def _byte_chunks(array: np.ndarray, order: str) -> Iterator[np.ndarray]:
    """The array's bytes in ``order``, as uint8 arrays of about ``_COMPARE_CHUNK_BYTES`` (copied only when the
    array is not contiguous)."""
    if array.flags.c_contiguous or array.flags.f_contiguous:
        flat = array.reshape(-1, order=order).view(np.uint8)  # type: ignore[call-overload]
        for start in range(0, flat.size, _COMPARE_CHUNK_BYTES):
            yield flat[start : start + _COMPARE_CHUNK_BYTES]
        return
    row_bytes = max(array.nbytes // max(array.shape[0], 1), 1)
    rows = max(_COMPARE_CHUNK_BYTES // row_bytes, 1)
    for start in range(0, array.shape[0], rows):
        yield np.ascontiguousarray(array[start : start + rows]).reshape(-1).view(np.uint8)


def _write(array: np.ndarray) -> _Entry:
    order = _order(array)
    fd = os.memfd_create("tfbridge-array", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, array.nbytes)
        with mmap.mmap(fd, array.nbytes) as mm:
            target = np.frombuffer(mm, dtype=array.dtype).reshape(array.shape, order=order)  # type: ignore[call-overload]
            np.copyto(target, array, casting="no")
            del target
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # nobody writes it any more, nor changes its size
        return _Entry(array, fd, order)
    except BaseException:
        os.close(fd)
        raise


def _same_bytes(entry: _Entry, array: np.ndarray) -> bool:
    if _order(array) != entry.order or tuple(array.shape) != entry.shape or array.dtype != entry.dtype:
        return False
    with mmap.mmap(entry.fd, array.nbytes, prot=mmap.PROT_READ) as mm:
        offset = 0
        for chunk in _byte_chunks(array, entry.order):
            held = np.frombuffer(mm, dtype=np.uint8, count=chunk.size, offset=offset)
            same = np.array_equal(held, chunk)
            del held
            if not same:
                return False
            offset += chunk.size
    return True


class SharedArrays:
    """The memory files of the big arrays of an executor's tasks, by array (see the module's docstring)."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}  # the latest file of each array
        self._open: set[_Entry] = set()  # every file open (a replaced one until its last user lets go)
        self._lock = threading.Lock()

    def acquire(self, array: np.ndarray) -> _Entry:
        """The file holding ``array``'s bytes now (reused, or written), with one more user."""
        with self._lock:
            entry = self._entries.get(id(array))
            if entry is None or entry.array is not array or not _same_bytes(entry, array):
                entry = self._entries[id(array)] = _write(array)  # a replaced entry closes with its last user
                self._open.add(entry)
            entry.users += 1
            return entry

    def release(self, entries: list[_Entry]) -> None:
        with self._lock:
            for entry in entries:
                entry.users -= 1
                if entry.users == 0:
                    if self._entries.get(id(entry.array)) is entry:
                        del self._entries[id(entry.array)]
                    self._open.discard(entry)
                    os.close(entry.fd)

    def disown(self) -> None:
        """In a process forked from the owner: close this process's copies of the files and forget them."""
        for entry in self._open:
            with contextlib.suppress(OSError):
                os.close(entry.fd)
        self._entries, self._open = {}, set()
        self._lock = threading.Lock()


class Dump:
    """The shared arrays one pickle of a task uses, in the order of the files sent with it."""

    def __init__(self, store: SharedArrays) -> None:
        self.store = store
        self.entries: list[_Entry] = []
        self._index: dict[int, int] = {}

    def reduce(self, array: np.ndarray) -> tuple[Any, ...]:
        """The pickle reduction of a big array: its id, rebuilt in the worker on a read-only mapping."""
        index = self._index.get(id(array))
        if index is None:
            entry = self.store.acquire(array)
            index = self._index[id(array)] = len(self.entries)
            self.entries.append(entry)
        entry = self.entries[index]
        return (shared_array, (SharedArray(index, entry.inode, tuple(array.shape), array.dtype, entry.order),))

    @property
    def fds(self) -> list[int]:
        return [entry.fd for entry in self.entries]

    def release(self) -> None:
        entries, self.entries = self.entries, []
        self.store.release(entries)


_LOADING = threading.local()  # the files sent with the task being unpickled in this thread


def shared_array(pid: SharedArray) -> np.ndarray:
    """In a worker, while :func:`loads_task` runs: the array ``pid`` names, mapped read-only."""
    fds: list[int] | None = getattr(_LOADING, "fds", None)
    if fds is None or not 0 <= pid.fd_index < len(fds):
        msg = (
            f"the task names shared array {pid.fd_index}, but {len(fds or ())} shared memory files came with it\n"
            "Hint: a task with shared arrays is read by tfbridge's process workers only (executors._shared)."
        )
        raise pickle.UnpicklingError(msg)
    fd = fds[pid.fd_index]
    if os.fstat(fd).st_ino != pid.inode:
        msg = f"the shared memory file {pid.fd_index} that came with the task is not the one its pickle names"
        raise pickle.UnpicklingError(msg)
    dtype = np.dtype(pid.dtype)
    count = int(np.prod(pid.shape, dtype=np.int64))
    mm = mmap.mmap(fd, count * dtype.itemsize, prot=mmap.PROT_READ)
    array: np.ndarray = np.frombuffer(mm, dtype=dtype, count=count).reshape(pid.shape, order=pid.order)  # type: ignore[call-overload]
    return array


def loads_task(payload: bytes, fds: list[int]) -> Any:
    """In a worker: the task, its shared arrays mapped read-only from ``fds`` (which the caller closes after)."""
    _LOADING.fds = fds
    try:
        return pickle.loads(payload)
    finally:
        _LOADING.fds = None


def is_read_only_write(exc: BaseException) -> bool:
    """Whether ``exc`` is numpy refusing to write into a read-only array (or to make one writeable)."""
    text = str(exc)
    return isinstance(exc, ValueError) and ("read-only" in text or "WRITEABLE" in text)


READ_ONLY_HINT = (
    f"arrays of {SHARED_ARRAY_MIN_BYTES // 2**20} MB or more that the source holds are shared read-only with the "
    "worker processes (one copy in shared memory for all of them). Copy such an array before changing it "
    "(e.g. `x = self.x[i].copy()`), or use executor='thread'."
)

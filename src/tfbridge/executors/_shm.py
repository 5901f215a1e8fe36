"""Shared memory slots for worker results, and the pickling that routes big arrays through them.

A slot is an anonymous memory file (``memfd``) created by the main process and handed to workers as a file
descriptor. It has no name in ``/dev/shm``, so nothing can outlive the processes that hold it: the kernel frees
it when the last descriptor and mapping close, even after a crash or SIGKILL. A slot grows when a worker needs
more room (the worker truncates the shared file larger; readers remap), and gives the room back when it is freed
holding more than twice what recent results needed (:class:`RecentNeed`): one outlier does not keep every slot
it passes through at its size.

Arrays of at least ``INLINE_LIMIT_BYTES`` travel as an :class:`ArrayHandle` (slot, offset, shape, dtype) in the
result's pickle stream; smaller ones and everything else travel inline.

The main process reads a result either *leased* (the arrays are views of the slot: no copy at all, and
TensorFlow takes page-aligned buffers without copying either; the slot is reused only after every view is
garbage) or *copied* (one copy out, the slot is free at once). The executor leases while it has spare slots.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import pickle
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INLINE_LIMIT_BYTES = 64 * 1024
_ALIGN_BYTES = 64


@dataclass(frozen=True)
class ArrayHandle:
    """Where one array of a result lies: small and picklable."""

    slot: int
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype  # the dtype itself: its .str would lose extension types such as bfloat16


def create_slot() -> int:
    """A new empty shared memory file; returns its descriptor. Not inheritable: worker processes get it on
    purpose (``pass_fds``), nothing else this process starts does."""
    return os.memfd_create("tfbridge-slot", os.MFD_CLOEXEC)


class SlotMap:
    """A process's view of one slot: maps the file and remaps when it grows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.mm: mmap.mmap | None = None
        # in the main process, the most a result has used since the file was last cut (None: unknown); the
        # file is at most twice that, as a writer grows it to at most twice what it needs
        self.peak: int | None = 0

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def view(self, needed: int) -> mmap.mmap:
        if self.mm is None or len(self.mm) < needed:
            size = self.size()
            if size < needed:
                msg = f"shared memory slot holds {size} bytes, {needed} needed"
                raise OSError(msg)
            # a smaller old mapping stays alive while arrays still view it, and goes with the last of them
            self.mm = mmap.mmap(self.fd, size)
        return self.mm

    def grow(self, needed: int) -> mmap.mmap:
        size = self.size()
        if size < needed:
            os.ftruncate(self.fd, max(needed, 2 * size))
        return self.view(needed)

    def trim(self, keep: int) -> None:
        """Cut the file back to ``keep`` bytes (a whole number of pages) when it holds more than twice that; its
        size is only looked at when ``peak`` says it could. Only for a free slot: no worker writes it and no array
        views it. Mappings longer than the file stay valid below its end, which is all anyone reads or writes: a
        writer makes the file long enough first."""
        if self.peak is not None and self.peak <= keep:
            return  # the file holds at most twice keep: no need to look
        if self.size() > 2 * keep:
            os.ftruncate(self.fd, keep)
        self.peak = keep

    def close(self) -> None:
        if self.mm is not None:
            with contextlib.suppress(BufferError):  # a view is still exported; the mapping goes with the process
                self.mm.close()
            self.mm = None


class RecentNeed:
    """The bytes the last ``window`` results used in their slots, for cutting back a slot an outlier grew.

    When a slot is freed, it is cut back to the largest of the results freed before it (the last ``window``)
    if it holds more than twice that; then its own result joins them. A slot's size therefore stays within
    twice what recent results needed, and an element much bigger than those around it gives its memory back
    as soon as its slot is freed. Not thread-safe: the caller holds a lock.
    """

    def __init__(self, window: int) -> None:
        self.used: deque[int] = deque(maxlen=window)

    def freed(self, slot: SlotMap, used: int | None) -> None:
        """``slot`` is free again; ``used``: what its result took (None: not read, e.g. an abandoned result)."""
        if used is None:
            slot.peak = None
        elif slot.peak is not None:
            slot.peak = max(slot.peak, used)
        if self.used:
            slot.trim(-(-max(self.used) // mmap.PAGESIZE) * mmap.PAGESIZE)
        if used is not None:
            self.used.append(used)


class _SlotPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, slot: SlotMap, slot_id: int) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.slot, self.slot_id, self.used = slot, slot_id, 0

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray or obj.dtype.hasobject or obj.nbytes < INLINE_LIMIT_BYTES:
            return None
        offset = -(-self.used // _ALIGN_BYTES) * _ALIGN_BYTES
        end = offset + obj.nbytes
        mm = self.slot.grow(end)
        target = np.frombuffer(mm, dtype=obj.dtype, count=obj.size, offset=offset).reshape(obj.shape)
        np.copyto(target, obj, casting="no")
        del target
        self.used = end
        return ArrayHandle(self.slot_id, offset, tuple(obj.shape), obj.dtype)


def dumps_result(value: Any, slot: SlotMap, slot_id: int) -> bytes:
    buffer = io.BytesIO()
    _SlotPickler(buffer, slot, slot_id).dump(value)
    return buffer.getvalue()


class _Lease:
    """Counts the live views of one slot; calls ``free(slot, used)`` when the last one is garbage."""

    def __init__(self, slot: int, free: Callable[[int, int], None]) -> None:
        self.slot, self.free, self.live, self.used = slot, free, 0, 0
        self.lock = threading.Lock()

    def watch(self, array: np.ndarray) -> None:
        with self.lock:
            self.live += 1
        weakref.finalize(array, self.release)

    def release(self) -> None:
        with self.lock:
            self.live -= 1
            done = self.live == 0
        if done:
            self.free(self.slot, self.used)


class _SlotUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, slots: list[SlotMap], lease: _Lease | None) -> None:
        super().__init__(file)
        self.slots, self.lease = slots, lease
        self.used = 0  # the end of the last array in the slot: the bytes this result took

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, ArrayHandle):
            msg = f"unexpected persistent id {pid!r}"
            raise pickle.UnpicklingError(msg)
        dtype = np.dtype(pid.dtype)
        count = int(np.prod(pid.shape, dtype=np.int64))
        end = pid.offset + count * dtype.itemsize
        self.used = max(self.used, end)
        mm = self.slots[pid.slot].view(end)
        view = np.frombuffer(mm, dtype=dtype, count=count, offset=pid.offset).reshape(pid.shape)
        if self.lease is None:
            return view.copy()  # the one copy: the slot is free for the next element at once
        self.lease.watch(view)
        return view


def loads_result(data: bytes, slots: list[SlotMap], slot: int, free: Callable[[int, int], None], lease: bool) -> Any:
    """The result in ``slot``; ``free(slot, used)`` is called once the slot may be written again, with the bytes
    the result took in it."""
    held = _Lease(slot, free) if lease else None
    if held is not None:
        held.live += 1  # held while unpickling, so a view dying early cannot free the slot too soon
    unpickler = _SlotUnpickler(io.BytesIO(data), slots, held)
    try:
        return unpickler.load()
    finally:
        if held is None:
            free(slot, unpickler.used)
        else:
            held.used = unpickler.used
            held.release()

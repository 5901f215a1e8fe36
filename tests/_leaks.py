"""What a test can leave behind, read from /proc: child processes (zombies included), shared-memory slots
(memfd descriptors and mappings, /dev/shm entries) and tfbridge threads. Free of TensorFlow; used by the
``nothing_left_behind`` fixture in conftest.py and by tests that look at worker processes themselves."""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass
from pathlib import Path


def children() -> set[int]:
    """Child processes of this process, zombies included (an unreaped worker is a leak too).

    Read from /proc/self/task/*/children: a child belongs to the thread that started it."""
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            out.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return out


def memfds() -> set[str]:
    fds = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("/memfd:"):
            fds.add(f"{fd.name}->{target}")
    return fds


def slot_mappings() -> int:
    return sum("memfd:tfbridge" in line for line in Path("/proc/self/maps").read_text().splitlines())


def dev_shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir()}


def tfbridge_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tfbridge")}


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait (without reaping) until ``pid`` has exited; False if it is still running after ``timeout_s``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)  # a pidfd turns readable when the process exits
        return bool(readable)
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    return not wait_exit(pid, 0)


@dataclass(frozen=True)
class Snapshot:
    children: frozenset[int]
    memfds: frozenset[str]
    mappings: int
    dev_shm: frozenset[str]
    threads: frozenset[threading.Thread]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(frozenset(children()), frozenset(memfds()), slot_mappings(), frozenset(dev_shm()),
                   frozenset(tfbridge_threads()))

    def new_since(self, before: Snapshot) -> list[str]:
        """What is here now and was not in ``before``, one line per kind; empty when nothing is."""
        out = []
        if self.children - before.children:
            out.append(f"child processes {sorted(self.children - before.children)} outlived the test")
        if self.memfds - before.memfds:
            out.append(f"shared-memory slot descriptors stayed open: {sorted(self.memfds - before.memfds)}")
        if self.mappings > before.mappings:
            out.append(f"{self.mappings - before.mappings} shared-memory slot mappings stayed mapped")
        if self.dev_shm - before.dev_shm:
            out.append(f"/dev/shm entries were left: {sorted(self.dev_shm - before.dev_shm)}")
        if self.threads - before.threads:
            out.append(f"tfbridge threads outlived the test: {sorted(t.name for t in self.threads - before.threads)}")
        return out


def pool_holders() -> list[str]:
    """For a failure message: each dataset whose process pool is still running, and what holds that dataset
    (gc's referrers; none means a reference from C code, e.g. TensorFlow's)."""
    import gc
    import types
    import weakref

    try:
        from tfbridge.executors.processes import ProcessExecutor
    except ImportError:
        return []
    out = []
    for fin in list(weakref.finalize._registry):  # type: ignore[attr-defined]  # to_dataset's finalize(dataset, ex.close)
        info = fin.peek()
        if info is None:
            continue
        dataset, func = info[0], info[1]
        executor = getattr(func, "__self__", None)
        del info
        if not isinstance(executor, ProcessExecutor) or not executor.pids():
            continue
        here = types.FrameType
        refs = [r for r in gc.get_referrers(dataset) if not (isinstance(r, here) and r.f_code is pool_holders.__code__)]
        names = []
        for r in refs:
            name = type(r).__name__
            if isinstance(r, types.FrameType):
                name += f" of {r.f_code.co_name} ({r.f_code.co_filename}:{r.f_lineno})"
            elif isinstance(r, dict):
                name += f" with keys {list(r)[:5]}"
            names.append(name)
        out.append(f"{type(dataset).__name__} with live workers {executor.pids()} held by {names or 'nothing gc sees'}")
    return out

"""A worker process: ``python -m tfbridge.executors._worker FD DEATH_FD PARENT_PID``.

Started as a fresh interpreter (never forked from a process that has TensorFlow loaded, never re-running the
user's ``__main__``), it talks to the main process over one socket (``FD``): it receives the task
(cloudpickled), the pass's seed and epoch, and element indices, and sends back results whose big arrays it has
written into the shared memory slot the main process named. It ignores Ctrl-C (the main process decides) and
exits when the socket closes.

It never outlives the main process (``PARENT_PID``), whatever it is doing when that process dies: see
:func:`exit_with_parent`.

Before each element it seeds ``random`` and ``numpy.random`` from ``(seed, epoch, index)``, so an element's
random draws do not depend on which worker makes it: a run is reproducible whatever the worker count.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import random
import select
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

_PARENT_POLL_S = 0.1  # only where pidfds are missing (Linux before 5.3)


def exit_with_parent(parent: int, death_fd: int) -> None:
    """End this process within moments of the main process ``parent``, however that one ends (SIGKILL, the
    OOM killer, a scheduler) and whatever this one is doing (sleeping, spinning in Python, inside native code
    that holds the GIL). Two watches, neither needing the main process to do anything as it dies:

    - ``death_fd`` is the read end of a pipe whose only write end the main process holds (non-inheritable, and
      closed in any process it forks). The pipe is set to signal its owner, this process, with SIGKILL on I/O;
      nothing is ever written to it, so the one event is the kernel closing the write end when the main process
      dies. The kernel kills this process then: no Python code runs, no GIL is needed.
    - a daemon thread waits on a pidfd of the main process (polls ``os.getppid()`` where pidfds are missing)
      and calls ``os._exit``: the backstop where a copy of the write end outlives the main process (a process
      it forked from native code, which runs no fork handlers).

    Neither is tied to the thread that started this worker (unlike ``prctl(PR_SET_PDEATHSIG)``, which fires when
    that *thread* ends).
    """
    with contextlib.suppress(OSError):
        fcntl.fcntl(death_fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(death_fd, fcntl.F_SETSIG, signal.SIGKILL)
        fcntl.fcntl(death_fd, fcntl.F_SETFL, fcntl.fcntl(death_fd, fcntl.F_GETFL) | os.O_ASYNC)
    readable, _, _ = select.select([death_fd], [], [], 0)
    if readable or os.getppid() != parent:  # the main process died before the watch was set
        os._exit(0)
    threading.Thread(target=_wait_for_parent, args=(parent,), daemon=True, name="tfbridge-parent-watch").start()


def _wait_for_parent(parent: int) -> None:
    try:
        pidfd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        if os.getppid() == parent:  # the pidfd is of our parent, not of a process that reused its pid
            select.select([pidfd], [], [])  # readable once it has exited
    else:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
    os._exit(0)  # no flush: a full pipe whose reader went with the main process would block it


class Seeder:
    """Seeds ``random`` and ``numpy.random`` for one element from ``(seed, epoch, index)`` (128 bits of a
    BLAKE2b hash each: with numpy's 32-bit integer seed, quicker, two of 300,000 elements drew the same numbers
    about ten times an epoch): about 14 microseconds an element."""

    def __init__(self, seed: int, epoch: int) -> None:
        self.base = hashlib.blake2b(f"{seed}:{epoch}:".encode(), digest_size=16)

    def __call__(self, index: int) -> None:
        import numpy as np

        h = self.base.copy()
        h.update(str(index).encode())
        digest = h.digest()
        random.seed(int.from_bytes(digest, "little"))
        np.random.seed(np.frombuffer(digest, np.uint32))


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _own_rss_bytes() -> int:
    """This process's resident memory of its own now: resident pages less shared ones (Linux: /proc/self/statm),
    so neither the shared-memory slots it writes results into nor mapped files count, only what it allocated."""
    with open("/proc/self/statm", "rb") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * _PAGE_BYTES


def serve(conn: Connection) -> None:
    from tfbridge.executors._shared import loads_task
    from tfbridge.executors._shm import SlotMap, dumps_result

    hello = pickle.loads(conn.recv_bytes())
    sys.path[:] = hello["sys_path"]
    for fd in hello["slot_fds"]:  # passed on purpose to this process, not to whatever the source starts
        os.set_inheritable(fd, False)
    slots = [SlotMap(fd) for fd in hello["slot_fds"]]
    max_rss: int | None = hello.get("max_rss")
    task: Any = None
    shared = False  # the task holds arrays shared read-only with this process
    seeder: Seeder | None = None
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "task":
            import cloudpickle  # noqa: F401  (cloudpickle output loads with plain pickle once importable)

            try:
                fds = _receive_fds(conn, message[2])
            except (EOFError, OSError):
                return
            try:
                task = loads_task(message[1], fds)
            except Exception as exc:  # the source does not unpickle here: every element fails with it
                task = _Broken(exc)
            finally:
                for fd in fds:  # the arrays' mappings keep what they need
                    os.close(fd)
            shared = bool(fds)
            continue
        if kind == "seed":
            seeder = Seeder(message[1], message[2])
            continue
        _, index, slot = message  # "run": one index, or a group of them (a tuple) answered in one reply

        reply: tuple[Any, ...]
        if isinstance(index, tuple):
            # the elements made before one that raised travel with its error: (values, its index, the error)
            values: list[Any] = []
            raised: tuple[int, bytes] | None = None
            for i in index:
                try:
                    if seeder is not None:
                        seeder(i)
                    values.append(task(i))
                except Exception as exc:
                    raised = (i, _failure(shared, exc, i))
                    break
            try:
                reply = ("group", index[0], (dumps_result(values, slots[slot], slot), raised))
            except Exception as exc:  # a value does not travel: the ones before it go, then its error
                k = next((k for k, v in enumerate(values) if not _travels(v)), None)
                try:
                    if k is None:  # every value pickles: the slot could not take them (memory)
                        raise exc
                    error = (index[k], _failure(shared, exc, index[k]))
                    reply = ("group", index[0], (dumps_result(values[:k], slots[slot], slot), error))
                except Exception as exc:  # filed under the group's first index
                    reply = ("err", index[0], _unsent(exc, index))
        else:
            try:
                if seeder is not None:
                    seeder(index)
                value = task(index)
                reply = ("ok", index, dumps_result(value, slots[slot], slot))
            except Exception as exc:
                reply = ("err", index, _failure(shared, exc, index))
        # the last field asks to be replaced: it grew past max_worker_rss (it still serves what it was sent)
        reply = (*reply, max_rss is not None and _own_rss_bytes() > max_rss)
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return


def _receive_fds(conn: Connection, count: int) -> list[int]:
    """The ``count`` descriptors the main process passes right after a task message (SCM_RIGHTS), not
    inheritable here; EOFError when the main process went away."""
    if not count:
        return []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=conn.fileno())
    try:
        sock.setblocking(True)
        data, fds, flags, _ = socket.recv_fds(sock, 1, count, socket.MSG_CMSG_CLOEXEC)
    finally:
        sock.detach()
    if data != b"F" or len(fds) != count or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise EOFError
    return fds


class _Broken:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self, index: int) -> Any:
        from tfbridge.sources._base import source_error

        raise source_error(self.exc, index, remote=True)


def _failure(shared: bool, exc: Exception, index: int) -> bytes:
    """The error element ``index`` raised, pickled for the main process; ``shared``: the task holds arrays shared
    read-only with this process (a write into one gets its own hint)."""
    from tfbridge.errors import SourceError
    from tfbridge.executors._shared import READ_ONLY_HINT, is_read_only_write
    from tfbridge.sources._base import remote_error, source_error

    cause = exc.__cause__ if isinstance(exc, SourceError) and exc.__cause__ is not None else exc
    if shared and is_read_only_write(cause):  # the source wrote into an array shared read-only
        error: BaseException = source_error(cause, index, remote=True, hint=READ_ONLY_HINT)
    else:
        error = remote_error(exc, index)
    return _picklable(error, index)


def _unsent(exc: BaseException, group: tuple[int, ...]) -> bytes:
    """The error for a group whose results could not be written for the main process (not one element's fault)."""
    from tfbridge.errors import SourceError

    msg = (
        f"element {group[0]} or one of the {len(group) - 1} sent with it: the worker process could not write their "
        f"results for the main process: {type(exc).__name__}: {exc}\nHint: the shared memory the results travel "
        "through could not grow (out of memory?); make elements smaller or use fewer workers."
    )
    return _picklable(SourceError(msg, index=group[0]), group[0])


def _travels(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return True


def _picklable(exc: BaseException, index: int) -> bytes:
    from tfbridge.errors import SourceError

    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(SourceError(str(exc), index=index))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, death_fd, parent = (int(a) for a in sys.argv[1:4])
    for own in (fd, death_fd):  # passed on purpose to this process, not to whatever the source starts
        os.set_inheritable(own, False)
    exit_with_parent(parent, death_fd)
    conn = Connection(fd)
    try:
        serve(conn)
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown (seconds when the source imported TensorFlow)


if __name__ == "__main__":
    main()

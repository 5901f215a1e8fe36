"""Worker processes with shared memory: for sources whose ``__getitem__`` is CPU-bound Python.

Workers are fresh interpreters (``python -m tfbridge.executors._worker``), so neither a forked TensorFlow nor
the user's unguarded ``__main__`` is ever re-run; the task (source + conformer) travels with cloudpickle, so
sources defined in ``__main__`` or a notebook work. A Keras PyDataset travels as a light copy that needs no Keras
in the worker (``_light``), and numpy arrays of 16 MB or more in the task are shared read-only with the workers
through memory files passed with the task, not copied into each (``_shared``). Results come back in order;
their big arrays come through a ring of shared memory slots (one per message in flight), copied out once in the
main process. Cheap elements travel in groups (``group`` consecutive positions in one message, answered in one
reply, each element still seeded from its own index), so the main process's cost per message is shared; without
groups, elements of tens of microseconds came back slower than one process makes them.

The pool lives as long as the executor: it starts on first use, survives between epochs, and is closed when the
dataset that owns it is garbage collected (or the interpreter exits). At each epoch the task is sent again when
the source changed (e.g. ``on_epoch_end`` reshuffled its index), and the pass's seed and epoch number go to every
worker, which seeds ``random`` and ``numpy.random`` from ``(seed, epoch, index)`` before each element: an
element's draws never depend on which worker makes it, so a run is reproducible whatever the worker count.

Workers end with this process however it ends (see ``_worker.exit_with_parent``); their descriptors are
non-inheritable here, and a process forked from this one closes its copies and lets the pools be (see
:meth:`ProcessExecutor._forked`). With ``max_elements_per_worker`` or ``max_worker_rss`` a worker is replaced by a
fresh one between elements (:meth:`_Pool.recycle`).

A pass that starts while another is still running (Keras validating on the dataset whose training pass it left
mid-way, or two iterators of one dataset) gets a pool of its own, started when it begins. Passes never share
workers or slots, so each delivers its own order, once. An extra pool is kept while passes still overlap, for the
next overlapping pass, and shut down once the passes left need one pool again.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import weakref
from collections import ChainMap, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, ClassVar, cast

import numpy as np

from tfbridge._checks import worker_died_hint
from tfbridge.errors import SourceError, TfBridgeError, WorkerDiedError
from tfbridge.executors._base import IN_FLIGHT_PER_WORKER, STALL, Task, timeout_error
from tfbridge.executors._inbox import CorruptMessage, Inbox, bound_sends
from tfbridge.executors._light import keras_base, light_reduce, user_module
from tfbridge.executors._shared import Dump, SharedArrays, wants_sharing
from tfbridge.executors._shm import RecentNeed, SlotMap, create_slot, loads_result

_LEASED_SLOTS = 8  # results handed to TensorFlow without a copy, alive at once (prefetch buffers hold some)
_WORKER_START_TIMEOUT_S = 120.0
_WORKER_JOIN_TIMEOUT_S = 5.0
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


_LIGHT = True  # light copies of Keras sources and shared big arrays (False: plain cloudpickle, for comparisons)
_BY_VALUE_LOCK = threading.Lock()  # one dump at a time registers modules with cloudpickle (see _TaskPickler)


def dumps_task(task: Task) -> bytes:
    """The task as bytes for worker processes (or Ray tasks); TfBridgeError saying why when it does not pickle.
    A Keras PyDataset travels as its light copy (see ``_light``); big arrays travel inside the bytes."""
    return _dump(task, None)[0]


def _dump(task: Task, store: SharedArrays | None) -> tuple[bytes, Dump | None]:
    """The task's bytes and, with ``store``, the shared arrays it uses (see ``_shared``): the light way first;
    when that fails, as plain cloudpickle does (the light copy never makes a source fail that pickles)."""
    if _LIGHT:
        dump = Dump(store) if store is not None else None
        try:
            return _pickle(task, light=True, dump=dump), dump
        except Exception:
            if dump is not None:
                dump.release()
    try:
        return _pickle(task, light=False, dump=None), None
    except Exception as exc:
        msg = (
            f"the source cannot be sent to worker processes: {type(exc).__name__}: {exc}\n"
            'Hint: use executor="thread", or keep unpicklable members (locks, open files, clients) out of '
            "the source, e.g. create them lazily in __getitem__."
        )
        raise TfBridgeError(msg) from exc


def _pickle(task: Task, light: bool, dump: Dump | None) -> bytes:
    import cloudpickle

    with io.BytesIO() as out:
        pickler = _task_pickler()(out, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.light, pickler.dump_arrays = light, dump
        if not light:
            pickler.dump(task)
            return out.getvalue()
        with _BY_VALUE_LOCK:
            try:
                pickler.dump(task)
            finally:
                for module in pickler.by_value:
                    cloudpickle.unregister_pickle_by_value(module)
        return out.getvalue()


@functools.cache
def _task_pickler() -> type[Any]:
    """cloudpickle's Pickler, keeping the file name of code it sends by value (classes and functions of
    ``__main__`` or a notebook): cloudpickle writes ``<dynamic-code>`` instead, and a traceback from a worker
    would then name no file. With the name the traceback gives the user's file and line, and the source line
    where the file can be read.

    With ``light``, a user's class below a Keras base travels as its light copy, its module pickled by value for
    the rest of the dump (registered with cloudpickle, unregistered after: the caller holds ``_BY_VALUE_LOCK``);
    with ``dump_arrays``, big numpy arrays travel as shared memory."""
    import cloudpickle

    reduce_code = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def keep_file_name(code: types.CodeType) -> Any:
        rebuild, args = reduce_code(code)
        return rebuild, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)

    class TaskPickler(cloudpickle.Pickler):  # type: ignore[misc]
        dispatch_table: ClassVar[Any] = ChainMap({types.CodeType: keep_file_name}, cloudpickle.Pickler.dispatch_table)
        light = False
        dump_arrays: Dump | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.by_value: list[types.ModuleType] = []

        def reducer_override(self, obj: Any) -> Any:
            if self.dump_arrays is not None and wants_sharing(obj):
                return self.dump_arrays.reduce(obj)
            if self.light and isinstance(obj, type):
                base = keras_base(obj)
                if base is not None:
                    module = user_module(obj)
                    if module is not None and module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                        cloudpickle.register_pickle_by_value(module)
                        self.by_value.append(module)
                    return light_reduce(obj, base)
            return super().reducer_override(obj)

    return TaskPickler


class _Worker:
    def __init__(self, wid: int, slot_fds: list[int], max_rss: int | None = None, timeout: float | None = None) -> None:
        parent, child = socket.socketpair()  # both ends non-inheritable; the child's is passed on purpose
        death_r, death_w = os.pipe()  # the worker's watch on this process (see _worker.exit_with_parent)
        env = dict(os.environ)
        for name in _THREAD_ENV:  # one worker per core: no nested thread pools unless the user asked
            env.setdefault(name, "1")
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # workers make numpy data; the GPU stays with training
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.wid = wid
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tfbridge.executors._worker", *map(str, (child.fileno(), death_r, os.getpid()))],
                pass_fds=[child.fileno(), death_r, *slot_fds],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            os.close(death_w)
            raise
        finally:
            child.close()
            os.close(death_r)
        self.death_w: int | None = death_w  # closed once the worker has exited (its closing kills the worker)
        self.conn = Connection(parent.detach())
        bound_sends(self.conn.fileno(), timeout)  # a send to a worker that stopped reading fails, not waits for good
        hello = {"sys_path": list(sys.path), "slot_fds": slot_fds, "max_rss": max_rss}
        self.conn.send_bytes(pickle.dumps(hello))
        self.outstanding: list[int] = []  # indices sent, not yet answered, in order
        self.slots: dict[int, int] = {}  # index -> slot it writes into
        self.task_digest = b""
        self.busy_since = 0.0  # when it began its first outstanding element
        self.handed = 0  # elements handed to it, for max_elements_per_worker
        self.retiring = False  # it asked to be replaced (max_worker_rss) or was handed its last element
        self.successor: _Worker | None = None  # started early to take its place
        self.inbox = Inbox(self.conn.fileno())  # its replies, read as they come (never a blocking read)

    def wait_ready(self) -> None:
        """Wait for the worker's hello back; WorkerDiedError when it dies, or does not answer (or sends a part of
        its answer only) within the start-up limit."""
        deadline = time.monotonic() + _WORKER_START_TIMEOUT_S
        try:
            while True:
                if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                    msg = f"worker process {self.wid} did not start within {_WORKER_START_TIMEOUT_S:.0f} s"
                    raise WorkerDiedError(msg)
                if self.inbox.read():
                    return
        except (EOFError, OSError, CorruptMessage):
            msg = (
                f"worker process {self.wid} {self.death()} while starting.\n"
                "Hint: run the source with executor='serial' to see its error."
            )
            raise WorkerDiedError(msg) from None

    def send(self, message: Any) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            index = self.outstanding[-1] if self.outstanding else None
            when = (
                f"before element {index} could be handed to it"
                if index is not None
                else "between passes, before this pass handed it any element (none was lost; the next pass starts "
                "new workers)"
            )
            msg = f"worker process {self.wid} (pid {self.proc.pid}) {self.death()} {when}.\n{worker_died_hint()}"
            raise WorkerDiedError(msg, index=index) from None

    def send_fds(self, fds: list[int]) -> None:
        """Pass ``fds`` to the worker (SCM_RIGHTS), right after the message that says how many follow."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=self.conn.fileno())
        try:
            sock.setblocking(True)  # as the connection is (a default socket timeout would have changed it)
            socket.send_fds(sock, [b"F"], fds)
        except OSError:
            msg = f"worker process {self.wid} (pid {self.proc.pid}) {self.death()} while receiving the task.\n"
            raise WorkerDiedError(msg + worker_died_hint()) from None
        finally:
            sock.detach()  # the connection keeps its descriptor

    def death(self) -> str:
        try:
            code = self.proc.wait(timeout=_WORKER_JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def stop(self) -> None:
        """Ask the worker to exit (kill it when it is mid-element: nobody will read that work)."""
        if self.successor is not None:
            self.successor.stop()
        if self.outstanding:
            self.proc.kill()
        else:
            with contextlib.suppress(WorkerDiedError):
                self.send(("stop",))
        self.conn.close()

    def kill(self) -> None:
        if self.successor is not None:
            self.successor.kill()
        self.proc.kill()

    def join(self) -> None:
        if self.successor is not None:
            self.successor.join()
        try:
            self.proc.wait(timeout=_WORKER_JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.death_w is not None:
            os.close(self.death_w)
            self.death_w = None

    def disown(self) -> None:
        """In a process forked from the main one: close this copy of the socket and pipe, touch nothing else (the
        worker is the parent's)."""
        if self.successor is not None:
            self.successor.disown()
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.death_w is not None:
            with contextlib.suppress(OSError):
                os.close(self.death_w)
            self.death_w = None
        _INHERITED.append(self)  # never collected here: Popen's finalizer would poll a process that is not ours


_INHERITED: list[_Worker] = []


class _Jobs:
    """A pass's order as the messages it travels in, made as they are sent: single indices, or tuples of
    ``group`` consecutive ones."""

    def __init__(self, order: Sequence[int], group: int) -> None:
        self.order, self.group = order, max(1, group)

    def __len__(self) -> int:
        return -(-len(self.order) // self.group)

    def __getitem__(self, k: int) -> Any:
        if self.group == 1:
            return int(self.order[k])
        return tuple(int(i) for i in self.order[k * self.group : (k + 1) * self.group])


def _group_answer(payload: Any) -> bool:
    """Whether a group's reply carries (its values pickled, None or (the index that raised, its error))."""
    if not (isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[0], bytes)):
        return False
    raised = payload[1]
    return raised is None or (
        isinstance(raised, tuple) and len(raised) == 2 and isinstance(raised[0], int) and isinstance(raised[1], bytes)
    )


_LIVE: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()
_EXIT_WAIT_S = 2.0
_POLL_S = 0.1


def _after_fork_in_child() -> None:
    global _BY_VALUE_LOCK
    _BY_VALUE_LOCK = threading.Lock()  # a thread of the parent (a warm-up, a pass) may have held it: not ours
    for ex in list(_LIVE):
        ex._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _at_exit() -> None:
    """Before the interpreter starts finalizing: stop every pool and let any pass that is waiting on its workers
    leave Python. A TensorFlow thread still inside a pass once finalization begins would never come back (Python
    ends threads that ask for the GIL then) and TensorFlow's iterator teardown would wait for it forever."""
    executors = list(_LIVE)
    for ex in executors:  # every pool is killed first, so the waits below overlap
        ex.stop_for_exit()
    for ex in executors:
        ex.wait_for_pass(_EXIT_WAIT_S)


class _Pool:
    """One set of worker processes and its ring of shared-memory slots, serving one pass at a time.

    ``lock`` is held by the pass it serves, from its first element to its end (or its early stop).
    """

    def __init__(
        self,
        workers: int,
        in_flight: int,
        timeout: float | None,
        max_elements: int | None = None,
        max_rss: int | None = None,
        group: int = 1,
    ) -> None:
        self.size, self.in_flight, self.timeout = workers, in_flight, timeout
        # elements sent in one message (a group is answered in one reply); one each when a deadline is set (every
        # element has its own) or a worker is replaced after a number of elements or past a memory limit
        self.group = 1 if timeout is not None or max_elements is not None or max_rss is not None else max(1, group)
        self.max_elements, self.max_rss = max_elements, max_rss  # when a worker is replaced by a fresh one
        # (payload, digest, shared arrays) of the current pass, for new workers; the arrays' files stay open while
        # it is current
        self.task: tuple[bytes, bytes, Dump | None] | None = None
        self.seed_message: tuple[str, int, int] | None = None
        self.sizes: dict[int, int] = {}  # elements in each group of the current pass, by its first index
        self.workers: list[_Worker] = []
        self.slot_fds: list[int] = []
        self.slots: list[SlotMap] = []
        self.free: deque[int] = deque()  # slots no worker is writing and no live array views
        self.need = RecentNeed(in_flight + _LEASED_SLOTS)  # cuts back a freed slot an outlier grew
        self.leased = 0  # slots whose arrays TensorFlow may still hold
        self.lease_lock = threading.RLock()  # reentrant: a view dropped by the garbage collector inside it frees
        self.generation = 0  # bumped when the pool stops: leases of an old pool do not free new slots
        self.lock = threading.Lock()
        # no thread is inside a pass on this pool: set at a pass's end, and between its elements once a closer
        # waits (see wait_for_pass). A pass suspended between elements holds ``lock`` but runs nowhere: an
        # iterator dropped part-way, whose dataset closes at exit, must not be waited for
        self.pass_done = threading.Event()
        self.pass_done.set()
        self.inside: int | None = None  # the thread running the pass now (None: no pass, or one suspended)
        self.waited = False  # a closer waits for the pass to leave Python
        self.exiting = False  # the interpreter is exiting: the pass ends at once, quietly
        self.used = False  # a pass ran on the current workers (those started ahead for none are killed, not asked)

    def start(self) -> None:
        self.slot_fds = [create_slot() for _ in range(self.in_flight + _LEASED_SLOTS)]
        self.slots = [SlotMap(fd) for fd in self.slot_fds]
        self.free = deque(range(len(self.slots)))
        self.leased = 0
        self.workers = []
        self.used = False
        try:
            for w in range(self.size):
                self.workers.append(_Worker(w, self.slot_fds, self.max_rss, self.timeout))
            for worker in self.workers:
                worker.wait_ready()
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        with self.lease_lock:  # first: a slot freed from now on (a view dropped in another thread) is left alone
            self.generation += 1
        for w in self.workers:
            if self.used:
                w.stop()
            else:  # started ahead for a pass that never came: it may still be importing the source's modules
                w.kill()
        for w in self.workers:
            w.join()
        self.workers = []
        for slot in self.slots:
            slot.close()
        for fd in self.slot_fds:
            os.close(fd)  # mappings still viewed by live arrays stay valid; the memory goes with them
        self._drop_task()
        self.slots, self.slot_fds, self.free = [], [], deque()

    def kill(self) -> None:
        """Kill the workers without waiting: the pass using them sees them gone, raises, and shuts the pool down."""
        for w in list(self.workers):
            w.kill()

    def disown(self) -> None:
        """In a process forked from the one that owns this pool: close this process's copies of the workers'
        sockets and pipes and of the slots (their memory is freed when the owner lets go), and forget them. The
        workers stay the owner's: nothing here may stop them or keep them alive."""
        for w in self.workers:
            w.disown()
        for slot in self.slots:
            slot.close()
        for fd in self.slot_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.workers, self.slots, self.slot_fds, self.free = [], [], [], deque()
        self.task = None  # its shared arrays' files are closed by the executor's store (SharedArrays.disown)
        self.generation += 1

    def wait_for_pass(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the pass using this pool in another thread to leave; returns at
        once when no pass is using it or the caller is the thread running that pass."""
        self.waited = True  # before reading ``inside``: a pass suspending after this read sees it and says so
        if self.inside not in (None, threading.get_ident()):
            self.pass_done.wait(timeout)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def prepare(self, payload: bytes, dump: Dump | None, seed: int, epoch: int) -> None:
        """Send the task to each worker that does not hold it yet, and this pass's seed and epoch to every worker
        (each seeds every element from ``(seed, epoch, index)``). Workers due for replacement are replaced first.
        ``dump``: the shared arrays the task uses (now the pool's to release)."""
        self._drop_task()
        self.task = (payload, hashlib.sha256(payload).digest(), dump)
        self.seed_message = ("seed", seed, epoch)
        self.recycle()
        for w in self.workers:
            self._brief(w)

    def _drop_task(self) -> None:
        """Forget the current task; the files of its shared arrays close unless another task uses them."""
        task, self.task = self.task, None
        if task is not None and task[2] is not None:
            task[2].release()

    def _brief(self, w: _Worker) -> None:
        assert self.task is not None and self.seed_message is not None
        payload, digest, dump = self.task
        if w.task_digest != digest:
            fds = dump.fds if dump is not None else []
            w.send(("task", payload, len(fds)))
            if fds:
                w.send_fds(fds)
            w.task_digest = digest
        w.send(self.seed_message)

    def spent(self, w: _Worker) -> bool:
        """Whether ``w`` gets no more elements: it asked to be replaced, or was handed max_elements_per_worker."""
        return w.retiring or (self.max_elements is not None and w.handed >= self.max_elements)

    def recycle(self) -> list[tuple[_Worker, _Worker]]:
        """Replace every spent worker that owes nothing by a fresh one (started early, as soon as it was found
        spent, so it is usually ready by then). Returns the (old, new) pairs."""
        replaced = []
        for position, w in enumerate(self.workers):
            if not self.spent(w):
                continue
            if w.successor is None:
                w.successor = _Worker(w.wid, self.slot_fds, self.max_rss, self.timeout)
            if w.outstanding:
                continue
            new, w.successor = w.successor, None
            self.workers[position] = new  # first: a failure below stops it with the pool
            w.stop()
            w.join()
            new.wait_ready()
            if self.task is not None:
                self._brief(new)
            replaced.append((w, new))
        return replaced

    def drain(self) -> bool:
        """Collect answers still owed by a pass that stopped early, so no slot is written while reused; each is
        waited for at most ``timeout`` (when given) from when its worker began it. False when a worker did not
        answer in time or cleanly: the pool must then be replaced (no element of the next pass is lost)."""
        for w in self.workers:
            while w.outstanding:
                wait_s = None if self.timeout is None else max(0.0, w.busy_since + self.timeout - time.monotonic())
                if not w.conn.poll(wait_s):
                    return False
                results: dict[int, Any] = {}
                try:
                    self._receive(w, results)
                except WorkerDiedError:
                    return False
                free = self._freer(leased=False)
                for _, _, slot, _ in results.values():
                    free(slot, None)
        return True

    def _receive(self, w: _Worker, results: dict[int, Any]) -> None:
        """File each whole reply ``w`` has sent in ``results``; its socket is readable, so this never blocks."""
        corrupt = None
        try:
            replies = w.inbox.read()
        except CorruptMessage as exc:
            replies, corrupt = exc.before, str(exc)
        except (EOFError, OSError):
            index = w.outstanding[0] if w.outstanding else None
            msg = (
                f"worker process {w.wid} (pid {w.proc.pid}) {w.death()} while producing {self._elements(index)}.\n"
                f"{worker_died_hint()}"
            )
            raise WorkerDiedError(msg, index=index) from None
        for reply in replies:
            if not (isinstance(reply, tuple) and len(reply) == 4 and reply[0] in ("ok", "err", "group")):
                raise self._corrupt(w, f"a message that is not a reply: {reply!r:.100}")
            kind, index, payload, retiring = reply
            if index not in w.outstanding:
                raise self._corrupt(w, f"a reply for element {index!r:.40}, which it was not making")
            w.outstanding.remove(index)
            w.retiring = w.retiring or bool(retiring)
            w.busy_since = time.monotonic()  # the next element it holds begins now
            results[index] = (kind, payload, w.slots.pop(index), w)
        if corrupt is not None:  # after the replies that came whole before it
            raise self._corrupt(w, corrupt)

    def _corrupt(self, w: _Worker, what: str) -> WorkerDiedError:
        """The error for a worker whose connection carried bytes that are not a reply: it is stopped (nothing it
        sends can be trusted any more) and the pool is replaced before the next pass."""
        w.proc.kill()
        index = w.outstanding[0] if w.outstanding else None
        msg = (
            f"worker process {w.wid} (pid {w.proc.pid}) sent {what} while producing {self._elements(index)}, and has "
            "been stopped.\nHint: something in the worker process wrote to its connection with the main process: look "
            "for code in the source that writes to file descriptors it did not open (os.write, a C library) or "
            "closes them; the next pass starts new workers."
        )
        return WorkerDiedError(msg, index=index)

    def _elements(self, index: int | None) -> str:
        """Names what a worker was making from the first index of a message: the element, or its group."""
        n = self.sizes.get(index, 1) if index is not None else 1
        return f"element {index}" if n == 1 else f"element {index} or one of the {n - 1} sent with it"

    def run(self, order: Sequence[int], stall_s: float | None = None) -> Generator[Any, None, None]:
        self.used = True
        results: dict[int, Any] = {}
        submitted = 0
        # a pass of at least two rounds of the slots in messages: a slot an outlier grew is cut back when it is
        # freed to what the last round needed, so the outlier of the pass before must have left that round
        jobs = _Jobs(order, min(self.group, len(order) // (2 * len(self.slots))))
        self.sizes = {}
        by_conn = {w.conn: w for w in self.workers}
        # a dead worker's error is raised at the position of the first element it owed, after every earlier
        # element (made by the other workers) has been delivered, as a user error would be
        dead: dict[_Worker, WorkerDiedError] = {}
        unusable: set[_Worker] = set()  # dead, or a send to it failed: it gets no more elements
        try:
            for position in range(len(jobs)):
                # invariant: in flight + leased <= slots, so a free slot exists for every submission
                while submitted < len(jobs) and submitted < position + self.in_flight:
                    for old, new in self.recycle():
                        by_conn.pop(old.conn, None)
                        by_conn[new.conn] = new
                    usable = [w for w in self.workers if w not in unusable and not self.spent(w)]
                    if not usable:
                        break
                    w = min(usable, key=lambda w: len(w.outstanding))
                    job, slot = jobs[submitted], self.free.popleft()
                    index = job[0] if isinstance(job, tuple) else job
                    if isinstance(job, tuple):
                        self.sizes[index] = len(job)
                    if not w.outstanding:
                        w.busy_since = time.monotonic()
                    w.outstanding.append(index)
                    w.handed += len(job) if isinstance(job, tuple) else 1
                    w.slots[index] = slot
                    submitted += 1
                    try:
                        w.send(("run", job, slot))
                    except WorkerDiedError:
                        unusable.add(w)  # answers it sent before dying are still read, then its end
                job = jobs[position]
                index = job[0] if isinstance(job, tuple) else job
                waiting_since, stalled = time.monotonic(), stall_s is None
                while index not in results:
                    if not stalled and time.monotonic() - waiting_since >= cast(float, stall_s):
                        yield STALL  # the consumer may deliver what it holds (or step out) while this element is made
                        waiting_since = time.monotonic()  # and again after as long, while it is not ready
                    if self.exiting:
                        return
                    for w, error in dead.items():
                        if index in w.outstanding:  # the first element it owed (earlier ones were raised)
                            raise error
                    if not by_conn:  # every worker is gone and this element was never handed to one
                        raise next(iter(dead.values()))
                    poll_s = _POLL_S if stalled else min(_POLL_S, cast(float, stall_s))
                    for conn in wait(list(by_conn), timeout=poll_s):
                        if self.exiting:
                            return
                        w = by_conn[cast(Connection, conn)]  # wait() returns the objects it was given
                        try:
                            self._receive(w, results)
                        except WorkerDiedError as exc:
                            dead[w] = exc
                            unusable.add(w)
                            del by_conn[cast(Connection, conn)]
                    if self.timeout is not None and index not in results:
                        self._check_deadline(index)
                kind, payload, slot, w = results.pop(index)
                self.sizes.pop(index, None)
                if kind == "err":
                    self._freer(leased=False)(slot, None)
                    raise self._error_from(w, index, payload)
                raised = None
                if kind == "group":
                    if not _group_answer(payload):
                        self._freer(leased=False)(slot, None)
                        raise self._unreadable(w, index, TypeError(f"{payload!r:.60} is not a group's answer"))
                    payload, raised = payload
                with self.lease_lock:
                    lease = self.leased < _LEASED_SLOTS
                    self.leased += lease
                try:
                    value = loads_result(payload, self.slots, slot, self._freer(leased=lease), lease=lease)
                except TfBridgeError:
                    raise
                except Exception as exc:
                    raise self._unreadable(w, index, exc) from None
                if kind != "group":
                    yield value
                    continue
                if not isinstance(value, list):
                    raise self._unreadable(w, index, TypeError(f"{type(value).__name__} is not a group's elements"))
                yield from value  # the group's elements, in order
                if raised is not None:  # the element after them raised
                    raise self._error_from(w, *raised)
            if unusable:  # a worker died or was stopped: the next pass starts on a fresh pool
                self.shutdown()
        finally:
            free = self._freer(leased=False)
            for _, _, slot, _ in results.values():  # answered but never delivered (early stop)
                free(slot, None)

    @staticmethod
    def _unreadable(w: _Worker, index: int, exc: Exception, what: str = "its result") -> SourceError:
        msg = (
            f"element {index}: {what}, sent by worker process {w.wid} (pid {w.proc.pid}), cannot be read in the "
            f"main process: {type(exc).__name__}: {exc}\nHint: a result should hold numpy arrays, numbers, "
            "strings, lists and dicts; an object of a class the main process cannot import does not travel."
        )
        return SourceError(msg, index=index)

    @classmethod
    def _error_from(cls, w: _Worker, index: int, payload: bytes) -> BaseException:
        """The error element ``index`` raised in ``w``, from its reply; a SourceError when it cannot be read."""
        try:
            error = pickle.loads(payload)
        except Exception as exc:
            return cls._unreadable(w, index, exc, "the error it raised")
        if not isinstance(error, BaseException):
            msg = f"element {index}: worker process {w.wid} (pid {w.proc.pid}) sent {error!r:.100} as its error"
            return SourceError(msg, index=index)
        return error

    def _check_deadline(self, index: int) -> None:
        assert self.timeout is not None
        for w in self.workers:
            if w.outstanding and w.outstanding[0] == index and time.monotonic() - w.busy_since >= self.timeout:
                w.proc.kill()  # nothing else can stop it; the pool is replaced before the next pass
                doing = "was still producing it"
                pending = w.inbox.pending()
                if pending is not None:  # frozen half-way through its reply
                    got, size = pending
                    doing = f"had sent {got:,} of the {size:,} bytes of its reply" if size else "had begun its reply"
                where = f"worker process {w.wid} (pid {w.proc.pid}) {doing} and has been stopped"
                raise timeout_error(index, self.timeout, where)

    def _freer(self, leased: bool) -> Callable[[int, int | None], None]:
        """What frees a slot of this pool, given what its result used (None: not read): the slot goes back to the
        free ring, cut back if an outlier grew it; a leased one also ends its lease. A leased slot is freed by
        whichever thread drops its last view; once the pool has stopped, freeing does nothing."""
        generation = self.generation

        def free(slot: int, used: int | None) -> None:
            with self.lease_lock:
                if generation == self.generation:
                    self.leased -= leased
                    self.need.freed(self.slots[slot], used)
                    self.free.append(slot)

        return free


class ProcessExecutor:
    """Worker pools for a dataset: the first serves every pass while passes follow one another; a pass that starts
    while others are live gets a pool of its own, kept while passes still overlap (see :meth:`_release`)."""

    name = "process"

    def __init__(
        self,
        workers: int,
        in_flight: int | None = None,
        seed: int | None = None,
        timeout: float | None = None,
        max_elements_per_worker: int | None = None,
        max_worker_rss: int | None = None,
        group: int = 1,
    ) -> None:
        self.workers = workers
        self.timeout = timeout
        self.group = group  # elements per message (see _Jobs; _Pool sends one each where it must)
        self.in_flight = in_flight or workers * IN_FLIGHT_PER_WORKER
        self.max_elements_per_worker, self.max_worker_rss = max_elements_per_worker, max_worker_rss
        # a SeedSequence made without entropy draws an int
        self.seed = seed if seed is not None else int(cast(int, np.random.SeedSequence().entropy) % (2**63))
        self._pools = [self._new_pool()]  # workers start on a pool's first pass
        self._shared = SharedArrays()  # big arrays of the tasks, shared with every pool's workers
        # guards the list, the choice of a pool and the epoch count; reentrant: a pass dropped by the garbage
        # collector releases its pool in whichever thread the collection runs, maybe one inside _acquire
        self._pools_lock = threading.RLock()
        self._epoch = 0
        self._closed = False
        self._exiting = False  # the interpreter is exiting: passes end at once, quietly
        self._warming: threading.Thread | None = None  # starting the first pool's workers ahead (see warm)
        _LIVE.add(self)

    def warm(self, task: Task) -> None:
        """Start the first pool's workers and hand them ``task`` now, in a thread of its own, so that the first
        pass finds them ready: their start-up (fresh interpreters importing the source's modules) overlaps what
        runs before the first element is asked for (the rest of the pipeline's build, a model's). The pool is
        held as a pass holds it; the first pass waits for it. A failure here is left for that pass to meet again
        and raise with its element's index."""
        pool = self._pools[0]
        if self._warming is not None or self._closed or not pool.lock.acquire(blocking=False):
            return

        def run() -> None:
            try:
                if not (self._closed or self._exiting):
                    if not pool.workers:
                        pool.start()
                    payload, dump = _dump(task, self._shared)
                    pool.prepare(payload, dump, self.seed, 0)
            except BaseException:
                pool.shutdown()  # the first pass starts a fresh pool and meets the error itself
            finally:
                with self._pools_lock:  # close() marks the executor closed under it and does not wait for this
                    if self._closed or self._exiting:
                        pool.shutdown()
                    pool.lock.release()

        self._warming = threading.Thread(target=run, name="tfbridge-warm-workers", daemon=True)
        self._warming.start()

    def _warmed(self) -> None:
        """Wait for :meth:`warm` to be done with the first pool (a pass, which holds no lock yet; never close(),
        which may run in a garbage collection inside a thread holding a lock the warm-up needs)."""
        warming = self._warming
        if warming is not None and warming is not threading.current_thread():
            warming.join()

    def _new_pool(self) -> _Pool:
        return _Pool(
            self.workers, self.in_flight, self.timeout, self.max_elements_per_worker, self.max_worker_rss, self.group
        )

    def _forked(self) -> None:
        """In a child forked from the process that made this executor (``os.fork``, multiprocessing's "fork"):
        let go of the parent's pools (this process's copies of their sockets, pipes and slots are closed) and
        start afresh, so that nothing in the child, its finalizers and exit included, holds or stops the
        parent's workers. A pass the child runs starts workers of its own."""
        for pool in self._pools:
            pool.disown()
        self._shared.disown()
        self._pools = [self._new_pool()]
        self._pools_lock = threading.RLock()  # another thread of the parent may have held it: not ours to wait on
        self._warming = None  # the parent's thread: not in this process

    def _acquire(self) -> tuple[_Pool, int]:
        """A pool no pass is using (the first one when it is free; a new one when every pool is in use), locked
        for the calling pass, and the pass's epoch number (for the workers' seeds)."""
        with self._pools_lock:
            epoch, self._epoch = self._epoch, self._epoch + 1
            for pool in list(self._pools):
                if pool.lock.acquire(blocking=False):
                    return pool, epoch
            pool = self._new_pool()
            pool.exiting = self._exiting
            pool.lock.acquire()
            self._pools.append(pool)
            return pool, epoch

    def _release(self, pool: _Pool) -> None:
        """End a pass's hold on ``pool``. While other passes are live an idle pool is kept for the next pass that
        overlaps them (Keras validating on the dataset whose training pass is mid-way, every epoch); once a
        single idle pool suffices again, the extra ones are shut down."""
        pool.lock.release()
        spare = []
        with self._pools_lock:
            idle = [p for p in self._pools if p.lock.acquire(blocking=False)]
            for p in idle[1:]:  # the first in the list (the original pool, when it is idle) is kept
                self._pools.remove(p)
                spare.append(p)
            if idle:
                idle[0].lock.release()
        for p in spare:  # out of the list, still locked: no pass can pick it up
            p.shutdown()
            p.lock.release()

    def close(self) -> None:
        """Stop the workers of every pool no pass is using; end any running pass by killing its workers.

        A pass can only be running while its dataset is being closed at interpreter exit (a live iterator keeps
        its dataset alive): the pass must leave Python before the interpreter goes, or TensorFlow's thread would
        hang in it at shutdown.
        """
        with self._pools_lock:  # a warm-up still running sees this when it ends, and shuts its pool down itself
            self._closed = True
            pools = list(self._pools)
        running = []
        for pool in pools:
            if pool.lock.acquire(blocking=False):
                try:
                    pool.shutdown()
                finally:
                    pool.lock.release()
            else:
                pool.kill()  # the pass sees its workers gone, raises, and shuts the pool down as it ends
                running.append(pool)
        for pool in running:
            pool.wait_for_pass(_WORKER_JOIN_TIMEOUT_S)

    def stop_for_exit(self) -> None:
        """For the interpreter's exit: mark the executor exiting (running passes end at once, quietly) and kill
        its workers. Does not wait: see :meth:`wait_for_pass`."""
        self._exiting = True
        with self._pools_lock:
            pools = list(self._pools)
        for pool in pools:
            pool.exiting = True
            pool.kill()

    def wait_for_pass(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the passes running in other threads to leave."""
        deadline = time.monotonic() + timeout
        for pool in list(self._pools):
            pool.wait_for_pass(max(0.0, deadline - time.monotonic()))

    def pids(self) -> list[int]:
        return [pid for pool in list(self._pools) for pid in pool.pids()]

    # -- one pass ------------------------------------------------------------------------------------
    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        self._warmed()
        pool, epoch = self._acquire()
        pool.pass_done.clear()
        pool.inside = threading.get_ident()
        try:
            if self._exiting:
                return
            if self._closed:
                msg = "this process executor was closed with the dataset that owned it"
                raise TfBridgeError(msg)
            if not pool.workers:
                pool.start()
            if not pool.drain():  # a worker owed an answer from an early-stopped pass and gave none in time
                pool.shutdown()
                pool.start()
            seed, epoch = seeds if seeds is not None else (self.seed, epoch)
            payload, dump = _dump(task, self._shared)
            pool.prepare(payload, dump, seed, epoch)
            elements = pool.run(indices, stall_s)
            try:
                for element in elements:
                    pool.inside = None  # suspended: nothing runs here until the next element is asked for
                    if pool.waited:
                        pool.pass_done.set()
                    yield element
                    pool.inside = threading.get_ident()
                    if pool.waited:
                        pool.pass_done.clear()
            finally:
                elements.close()
        except WorkerDiedError as exc:
            pool.shutdown()  # a broken pool is never reused; the next pass starts a fresh one
            if self._closed:  # its workers were killed by close(), not by the system
                msg = "this process executor was closed with the dataset that owned it, part-way through this pass"
                raise TfBridgeError(msg) from exc
            raise
        except BaseException:
            pool.shutdown()
            raise
        finally:
            if self._closed:  # the dataset went away during this pass
                pool.shutdown()
            pool.inside = None
            pool.pass_done.set()
            self._release(pool)

"""Executors run a Python source's element production: serial, threads, processes, Ray tasks.

:class:`ExecutorOptions` says who runs them; :func:`choose` decides ``"auto"`` from what the peek measured
(and says why); :func:`make` builds the one executor a dataset uses. "auto" never chooses Ray.
"""

from __future__ import annotations

import functools
import os
import pickletools
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tfbridge.errors import TfBridgeError
from tfbridge.executors._base import IN_FLIGHT_PER_WORKER, Executor, Task
from tfbridge.executors._options import EXECUTOR_NAMES, ExecutorName, ExecutorOptions, resolve
from tfbridge.executors.processes import ProcessExecutor, dumps_task
from tfbridge.executors.serial import SerialExecutor
from tfbridge.executors.threads import ThreadExecutor

_CHEAP_ELEMENT_S = 0.0005  # below this per element (CPU + waiting), handing work to workers costs more than it saves
_WAITING_SHARE = 0.5  # waiting (I/O, sleeps) at least this share of an element's time: threads overlap the waits
_LATENCY_WORKERS = 16  # threads for an explicit executor="thread" without workers=
_MAX_LATENCY_WORKERS = 64
_PER_ELEMENT_OVERHEAD_S = 0.00015  # Python time one element costs the feeding side: bounds useful concurrency
# a conservative memcpy rate (numpy copies a 38.5 MB batch at about 10 GB/s on the 2-core machine of
# benchmarks/RESULTS.md): every route copies an element once on its way into TensorFlow
_COPY_BYTES_PER_S = 5e9
# (serial: into a tensor in tf.data's thread; processes: into shared memory in the worker, read there without a copy)
_PROCESS_MAIN_S = 0.0004  # the main process's time per element a worker process made (receive it, hand it over)
_PROCESS_WORKER_S = 0.0001  # a worker's own time per element beside the source's (check, write, reply)
_WORKER_BASE_S = 0.25  # CPU seconds a worker process takes to start: interpreter, numpy, tfbridge
_IMPORT_S_PER_MODULE = 0.0015  # CPU seconds a worker spends per module it imports to unpickle the source
_OWN_CODE_MODULES = 20  # a package of at most this many modules is taken as the user's code: its imports count
_PAYLOAD_BYTES_PER_S = 5e8  # a pickled source (arrays it holds) sent to and unpickled by each worker
# packages every worker loads for itself (its own code, the checks it runs): not counted against a source
_WORKER_PACKAGES = frozenset({"__main__", "numpy", "tfbridge", "cloudpickle", "optree", "typing_extensions"})
_PROCESS_SPEEDUP = 1.5  # processes must make elements this much faster than serial, once started...
_FIRST_EPOCH_GAIN = 1.1  # ...and finish the first epoch, their start-up included, this much sooner
_HYSTERESIS = 1.1  # a decision made for a source stands until a new measurement passes its threshold by this factor
_PICKLE_OPS_SCANNED = 50_000  # the module names of a task's pickle are read from its first opcodes


@dataclass(frozen=True)
class Choice:
    """The executor a dataset runs on (``native``: none, tf.data runs it), its worker count and why."""

    name: str
    workers: int
    reason: str


@dataclass(frozen=True)
class Cost:
    """What producing ``count`` peeked elements cost, whether the source can only be read in order, and how many
    elements an epoch holds (None: not known).

    ``queued_s`` is the part of ``wall_s`` the reading thread was ready to run but waited for a core (a busy
    machine): it is neither the source's CPU time nor its waiting, and the choice ignores it."""

    wall_s: float
    cpu_s: float
    count: int
    nbytes: int = 0
    sequential: bool = False
    queued_s: float = 0.0
    length: int | None = None

    @property
    def cpu_per(self) -> float:
        return self.cpu_s / max(self.count, 1)

    @property
    def waiting_per(self) -> float:
        """Seconds per element the source waits (I/O, sleeps, locks): wall time that is neither CPU nor queueing."""
        return max(self.wall_s - self.cpu_s - self.queued_s, 0.0) / max(self.count, 1)

    @property
    def bytes_per(self) -> float:
        return self.nbytes / max(self.count, 1)


@dataclass(frozen=True)
class Startup:
    """What starting one worker process costs for a task: CPU seconds, and the packages (beyond numpy and
    tfbridge, which every worker loads) that unpickling the task imports, with how many modules each has here."""

    seconds: float
    imports: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        if not self.imports:
            return ""
        named = ", ".join(name for name, _ in self.imports[:4]) + (", ..." if len(self.imports) > 4 else "")
        return f" (unpickling the source imports {named})"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pickle_problem(task: Task | None) -> str | None:
    """None when ``task`` can be sent to worker processes, else why not (first line of the error)."""
    payload = pickled(task)
    return payload if isinstance(payload, str) else None


def pickled(task: Task | None) -> bytes | str:
    """``task`` as worker processes receive it, or why it cannot be sent (first line of the error)."""
    if task is None:
        return "the source has no index"
    try:
        return dumps_task(task)
    except TfBridgeError as exc:
        return "the source does not pickle (" + str(exc).splitlines()[0].split(": ", 1)[-1] + ")"


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "MEMOIZE", "STOP"}) | _MEMO_PUTS


def pickled_modules(payload: bytes) -> set[str]:
    """The modules unpickling ``payload`` imports: the modules of the classes and functions it names (GLOBAL,
    STACK_GLOBAL) and those cloudpickle sends as module references (``subimport``). Reads the first opcodes
    only (a class is named where its first object is)."""
    modules: set[str] = set()
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = [None, None]  # the last two values pushed, as far as they are strings
    subimport = False
    try:
        for k, (op, arg, _) in enumerate(pickletools.genops(payload)):
            if k >= _PICKLE_OPS_SCANNED:
                break
            name = op.name
            if name == "MEMOIZE":
                memo[len(memo)] = pushed[-1]
            elif name in _MEMO_PUTS:
                memo[int(str(arg))] = pushed[-1]
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                module, _, qualname = str(arg).partition(" ") if name == "GLOBAL" else (pushed[-2], "", pushed[-1])
                if isinstance(module, str):
                    modules.add(module)
                subimport = qualname in ("subimport", "dynamic_subimport")
                pushed.append(None)
            elif name not in _NO_PUSH:
                value = arg if name in _STRING_OPS else memo.get(int(str(arg))) if name in _MEMO_GETS else None
                if subimport and isinstance(value, str):
                    modules.add(value)
                    subimport = False
                pushed.append(value if isinstance(value, str) else None)
            del pushed[:-2]
    except Exception:  # pickletools cannot read it: the modules read so far
        pass
    return modules


def _keras_backend() -> str | None:
    keras = sys.modules.get("keras")
    try:
        return str(keras.config.backend()) if keras is not None else None
    except Exception:
        return None


def _module_names(module: Any) -> Iterator[str]:
    """The modules that ``module``'s own namespace shows it imports: modules it holds, and the modules of the
    classes and functions it imported (read from their ``__dict__``, so no lazy attribute is triggered)."""
    try:
        values = list(vars(module).values())
    except TypeError:
        return
    for value in values:
        try:
            if isinstance(value, types.ModuleType):
                name = vars(value).get("__name__")
            elif isinstance(value, type):
                name = vars(value).get("__module__")
            elif isinstance(value, types.FunctionType):
                name = value.__module__
            else:
                continue
        except Exception:  # an object that answers oddly: not followed
            continue
        if isinstance(name, str):
            yield name


def startup(payload: bytes) -> Startup:
    """The start of one worker process for this pickled task, in CPU seconds: the worker's own start, the
    packages unpickling the task imports (each costing what its modules loaded in this process cost to import)
    and reading the payload.

    The packages are those of the modules the pickle names, and, for a module of the user's own (a package of a
    few modules: ``mydata.py``), those it imports in turn. A worker is a fresh interpreter, so a source whose
    class comes from Keras or torch, or from a file that imports TensorFlow, makes it import those first:
    seconds, against a quarter of a second for a plain class."""
    sizes: dict[str, int] = {}
    for module in list(sys.modules):
        top = module.split(".", 1)[0]
        sizes[top] = sizes.get(top, 0) + 1
    skip = set(sys.stdlib_module_names) | _WORKER_PACKAGES
    tops: set[str] = set()
    seen: set[str] = set()
    todo = list(pickled_modules(payload))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".", 1)[0]
        if top in skip:
            continue
        tops.add(top)
        if sizes.get(top, 0) <= _OWN_CODE_MODULES and name in sys.modules:  # the user's code: what it imports
            parts = name.split(".")
            todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # importing a.b.c imports a and a.b
            todo += _module_names(sys.modules[name])
    backend = _keras_backend()
    if tops & {"keras", "tf_keras"} or any(t == "tensorflow" or t.startswith("tensorflow_") for t in tops):
        tops |= {"tensorflow", "keras"} if backend in (None, "tensorflow") else {"keras", backend}
    imports = tuple(sorted(((t, sizes[t]) for t in tops if sizes.get(t)), key=lambda tn: (-tn[1], tn[0])))
    modules = sum(n for _, n in imports)
    seconds = _WORKER_BASE_S + _IMPORT_S_PER_MODULE * modules + len(payload) / _PAYLOAD_BYTES_PER_S
    return Startup(seconds, imports)


_EARLIER: dict[int, tuple[weakref.ref[Any], dict[str, bool]]] = {}


def _earlier(source: Any) -> dict[str, bool]:
    """The decisions made for ``source`` before (in this process), by threshold name."""
    entry = _EARLIER.get(id(source))
    return entry[1] if entry is not None and entry[0]() is source else {}


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    entry = _EARLIER.get(key)
    if entry is not None and entry[0] is ref:
        del _EARLIER[key]


def _remember(source: Any, decisions: dict[str, bool]) -> None:
    if source is None or not decisions:
        return
    entry = _EARLIER.get(id(source))
    if entry is not None and entry[0]() is source:
        entry[1].update(decisions)
        return
    try:
        ref = weakref.ref(source, functools.partial(_forget, id(source)))
    except TypeError:  # not weakly referenceable (a list, a dict): nothing is remembered
        return
    _EARLIER[id(source)] = (ref, dict(decisions))


def _passes(value: float, threshold: float, before: bool | None) -> bool:
    """``value >= threshold``, with hysteresis: when the same source passed (or failed) this test before, the
    earlier answer stands until ``value`` is past the threshold by ``_HYSTERESIS`` the other way."""
    if before is None:
        return value >= threshold
    return value >= (threshold / _HYSTERESIS if before else threshold * _HYSTERESIS)


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.0f} h"


def choose(
    cost: Cost,
    payload: Callable[[], bytes | str] = lambda: b"",
    *,
    source: Any = None,
    cpus: int | None = None,
) -> Choice:
    """The executor ``auto`` picks from what the peek measured (and why, with the figures).

    Each element's cost is split into CPU time and waiting (I/O, sleeps) by the peek, leaving out any time it
    spent queued for a core on a busy machine, so a busy machine does not change the choice. Cheap elements
    stay serial; elements that mostly wait get threads; CPU-bound elements get worker processes only when,
    by the estimates below, processes make elements ``_PROCESS_SPEEDUP`` times faster once started and finish
    the first epoch (``cost.length`` elements, their start-up included) ``_FIRST_EPOCH_GAIN`` times sooner.

    ``payload()`` is the source's task pickled for workers (or why it cannot be): the modules it names say what a
    worker imports before its first element (:func:`startup`). ``source``: the object decided for; a decision
    made for it before stands until a new measurement passes the threshold by ``_HYSTERESIS``. ``cpus``: the
    cores to decide for (None: those this process may use).
    """
    if cost.sequential:
        return Choice("serial", 1, "a stream (generator/iterable) can only be read in order by one reader")
    before = _earlier(source) if source is not None else {}
    decided: dict[str, bool] = {}
    try:
        return _choose(cost, payload, before, decided, cores() if cpus is None else cpus)
    finally:
        _remember(source, decided)


def _choose(
    cost: Cost, payload: Callable[[], bytes | str], before: dict[str, bool], decided: dict[str, bool], n: int
) -> Choice:
    cpu, waiting = cost.cpu_per, cost.waiting_per
    per = cpu + waiting
    decided["cheap"] = not _passes(per, _CHEAP_ELEMENT_S, None if "cheap" not in before else not before["cheap"])
    if decided["cheap"]:
        reason = f"elements are cheap ({per * 1e3:.2f} ms each); workers would cost more than they save"
        return Choice("serial", 1, reason)
    share = waiting / per
    decided["waiting"] = _passes(share, _WAITING_SHARE, before.get("waiting"))
    if decided["waiting"]:
        n = min(_MAX_LATENCY_WORKERS, max(8, round(per / _PER_ELEMENT_OVERHEAD_S)))
        return Choice(
            "thread",
            n,
            f"elements take {per * 1e3:.1f} ms each but {share:.0%} of that is waiting, not CPU time: "
            f"the source waits, so {n} threads keep many elements in flight",
        )
    copy = cost.bytes_per / _COPY_BYTES_PER_S
    if n < 2:
        return Choice("serial", 1, "one core: parallel workers cannot help CPU-bound elements")
    # seconds per element: serial makes them in the tf.data thread; n worker processes share the n cores with
    # the main process, which receives each element (copying it out of shared memory) and feeds it to tf.data,
    # one after another
    serial = per + copy + _PER_ELEMENT_OVERHEAD_S
    processes = max(
        _PROCESS_MAIN_S + copy, (per + copy + _PROCESS_WORKER_S + _PROCESS_MAIN_S + _PER_ELEMENT_OVERHEAD_S) / n
    )
    speedup = serial / processes
    decided["speedup"] = _passes(speedup, _PROCESS_SPEEDUP, before.get("speedup"))
    if not decided["speedup"]:
        return Choice(
            "serial",
            1,
            f"elements take {cpu * 1e3:.2f} ms of CPU each: too little for worker processes to pay for passing "
            f"them back (about {processes * 1e3:.2f} ms per element with {n} processes against "
            f"{serial * 1e3:.2f} ms serial)",
        )
    sent = payload()
    if isinstance(sent, str):
        return Choice("thread", n, f"elements are CPU-bound ({cpu * 1e3:.1f} ms each) but {sent}")
    start = startup(sent)
    # workers start at once, one per core, and the shared memory for the elements in flight is written fresh once
    started = start.seconds + IN_FLIGHT_PER_WORKER * n * cost.bytes_per / _COPY_BYTES_PER_S
    length = cost.length
    if length is not None:
        serial_epoch, process_epoch = length * serial, started + length * processes
        gain = serial_epoch / process_epoch
        decided["first epoch"] = _passes(gain, _FIRST_EPOCH_GAIN, before.get("first epoch"))
        if not decided["first epoch"]:
            return Choice(
                "serial",
                1,
                f"elements take {cpu * 1e3:.1f} ms of CPU each, but an epoch of {length:,} takes about "
                f"{_seconds(serial_epoch)} serial, while {n} worker processes would need about {_seconds(started)} "
                f"to start{start.describe()}: {_seconds(process_epoch)} for the first epoch",
            )
        epoch = (
            f"; an epoch of {length:,} about {_seconds(process_epoch)} against {_seconds(serial_epoch)} serial, "
            f"{_seconds(started)} of start-up included{start.describe()}"
        )
    else:
        epoch = f"; {_seconds(started)} to start{start.describe()}"
    return Choice(
        "process",
        n,
        f"elements are CPU-bound ({cpu * 1e3:.1f} ms of CPU each): one worker process per core ({n}) escapes the "
        f"GIL, about {processes * 1e3:.2f} ms per element against {serial * 1e3:.2f} ms serial{epoch}",
    )


_THREAD_WINDOW_BYTES = 1 << 30  # bytes of elements threads hold in flight at once, at most (2 elements at least)


_GROUP_S = 0.002  # work a message to a worker process carries at least, when elements are cheaper than that
_GROUP_BYTES = 1 << 20  # ...within this many bytes of elements (bigger ones cost their copy, not the message)
_MAX_GROUP = 64


def group_size(element_s: float, element_bytes: float, options: ExecutorOptions) -> int:
    """Elements a worker process is sent in one message: cheap elements travel in groups of about ``_GROUP_S``
    of work, so the main process's cost per message is shared among them. One each with a ``timeout`` (each
    element keeps its own deadline), with ``max_elements_per_worker`` or ``max_worker_rss`` (a worker is replaced
    after exactly that many elements, or after the element that took it past the limit) and when the cost is not
    known."""
    recycled = options.max_elements_per_worker is not None or options.max_worker_rss is not None
    if options.timeout is not None or recycled or element_s <= 0:
        return 1
    group = min(_MAX_GROUP, int(_GROUP_S // element_s), int(_GROUP_BYTES // max(element_bytes, 1.0)))
    return max(1, group)


def make(
    choice: Choice,
    options: ExecutorOptions,
    seed: int | None = None,
    element_bytes: float = 0.0,
    element_s: float = 0.0,
) -> Executor:
    """The executor for ``choice`` (never "auto" or "native"), with the options' timeout, Ray address and worker
    recycling. ``element_bytes`` (the peek's mean) bounds what threads hold in flight: two elements a thread,
    within ``_THREAD_WINDOW_BYTES`` (big elements then leave some threads idle). ``element_s`` (the peek's mean
    time per element) sets how many elements travel to a worker process in one message (:func:`group_size`)."""
    workers = choice.workers or options.workers
    if choice.name == "serial":
        return SerialExecutor(options.timeout)
    if choice.name == "thread":
        threads = workers or _LATENCY_WORKERS
        window = threads * IN_FLIGHT_PER_WORKER
        if element_bytes > 0:
            window = max(2, min(window, int(_THREAD_WINDOW_BYTES // element_bytes)))
        return ThreadExecutor(threads, in_flight=window, timeout=options.timeout)
    if choice.name == "process":
        return ProcessExecutor(
            workers or cores(),
            seed=seed,
            timeout=options.timeout,
            max_elements_per_worker=options.max_elements_per_worker,
            max_worker_rss=options.max_worker_rss,
            group=group_size(element_s, element_bytes, options),
        )
    if choice.name == "ray":
        from tfbridge.executors.ray import RayExecutor, _ray

        _ray()  # says now, with the install hint, when Ray is missing
        ray_executor = RayExecutor(workers or None, address=options.ray_address, timeout=options.timeout)
        ray_executor.connect()  # here, in the thread that builds the dataset, never in a tf.data thread
        return ray_executor
    msg = f"no executor is made for {choice.name!r} (tfbridge chooses one for 'auto'; 'native' runs no Python)"
    raise TfBridgeError(msg)


__all__ = [
    "EXECUTOR_NAMES",
    "Choice",
    "Cost",
    "Executor",
    "ExecutorName",
    "ExecutorOptions",
    "ProcessExecutor",
    "SerialExecutor",
    "Startup",
    "Task",
    "ThreadExecutor",
    "choose",
    "cores",
    "group_size",
    "make",
    "pickle_problem",
    "pickled",
    "resolve",
    "startup",
]

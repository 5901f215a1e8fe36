"""The one Protocol every kind of source implements, and what the kinds share.

A *source kind* owns its whole route: its spec from a peek, its tf.data.Dataset from a plan, a scan of its
elements (validate, inspect, normalisation), and its split into parts (materialize). Nothing outside
``sources/`` asks which kind it holds; it asks the source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tfbridge import _nest
from tfbridge._checks import short
from tfbridge.errors import SourceError, SpecInferenceError, SpecMismatchError, TfBridgeError

if TYPE_CHECKING:
    from tfbridge.spec import Inference, Spec

T = TypeVar("T")
Task = Callable[[int], Any]


@dataclass
class Peek:
    """Sample elements and what producing them cost (the executor choice reads the costs)."""

    samples: list[tuple[int, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    nbytes: int = 0
    queued_s: float = 0.0  # of wall_s, the time the reading thread was ready to run but waited for a core
    costs: list[tuple[float, float, float, int]] = field(default_factory=list)  # per element: wall, cpu, queued, bytes
    again: tuple[float, float, float] | None = None  # big elements: one made again in reused memory (wall, cpu, queued)
    # an element's arrays lay in the memory of an earlier one's: the source fills one buffer again and again
    reused_memory: bool = False

    @property
    def count(self) -> int:
        return len(self.samples)

    def steady(self) -> tuple[float, float, int, int, float]:
        """(wall_s, cpu_s, count, nbytes, queued_s) of the elements but the slowest, when there are 4 or more: a
        first call that opens files or imports, or a pause of the whole process (a garbage collection running
        finalizers), then does not count as every element's cost. Big elements made again in memory freed just
        before (``again``) cost what a pass pays, where the peek, which keeps every sample, pays for memory the
        process never had: the lower of the two counts."""
        costs = self.costs
        if len(costs) < 4 or len(costs) != self.count:
            wall, cpu, count, nbytes, queued = self.wall_s, self.cpu_s, self.count, self.nbytes, self.queued_s
        else:
            kept = sorted(costs)[:-1]
            wall, cpu, count = sum(c[0] for c in kept), sum(c[1] for c in kept), len(kept)
            nbytes, queued = sum(c[3] for c in kept), sum(c[2] for c in kept)
        if self.again is not None and count and self.again[1] < cpu / count:
            again_wall, again_cpu, again_queued = self.again
            return again_wall * count, again_cpu * count, count, nbytes, again_queued * count
        return wall, cpu, count, nbytes, queued


class Runner(Protocol):
    """What a source needs of an executor: an ordered map of a picklable task over element indices."""

    name: str
    workers: int

    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """Everything a source needs to build its dataset, decided before anything is built."""

    spec: Spec  # the elements as delivered (float policy applied, or the spec given)
    conform: bool = True  # check and convert every element where it is produced
    finite: bool = False  # float fields must hold no NaN or Inf (checked where elements are conformed)
    runner: Runner | None = None  # the executor of a Python source, made once per dataset
    shuffle: bool = False
    seed: int | None = None
    shard: tuple[int, int] | None = None  # (number of input pipelines, this one's id)
    batch_size: int | None = None  # a source that can batch by index does; others leave it to the pipeline
    drop_remainder: bool = False
    padding: Any = None  # with batch_size: pad each batch to its longest with these values (a nest like the spec)
    buckets: list[int] | None = None  # with padding: each batch from one bucket of lengths (pad_batch's buckets)
    timeout: float | None = None
    seconds_per_element: float = 0.0  # measured in the peek (chunking reads it)
    bytes_per_element: float = 0.0
    errors: list[BaseException] | None = None  # a failing pass ends early and leaves its error here
    # the peek saw the source return one buffer again and again: each element is copied as it is made, as
    # tfbridge (and TensorFlow's prefetch) hold elements while the next ones are made
    detach: bool = False
    # start worker processes now (a dataset pad_batch may build again instead, or materialize's, waits: False)
    warm: bool = True


def without_buckets(plan: BuildPlan) -> BuildPlan:
    """``plan`` for a source that batches by index but does not bucket: with buckets asked, it gives single
    examples and the pipeline buckets them."""
    if plan.buckets is None:
        return plan
    return dataclasses.replace(plan, batch_size=None, padding=None, buckets=None, drop_remainder=False)


@dataclass(frozen=True)
class Built:
    """A source's dataset; ``batched_by_source`` when it applied the plan's ``batch_size`` itself."""

    dataset: Any
    batched_by_source: bool = False


@runtime_checkable
class Source(Protocol):
    """One kind of source. ``obj`` is the user's object."""

    obj: Any

    @property
    def batched(self) -> bool:
        """Whether an element is a batch."""
        ...

    @property
    def name(self) -> str:
        """How messages name the source."""
        ...

    @property
    def native_route(self) -> str | None:
        """Why no Python runs per element (tf.data runs it), or None when elements pass through Python."""
        ...

    @property
    def random_access(self) -> bool:
        """Elements can be read by index: shuffled, split into parts, produced by workers."""
        ...

    @property
    def one_shot(self) -> bool:
        """The source gives one pass only (an iterator)."""
        ...

    @property
    def infinite(self) -> bool:
        """The source is known never to end (e.g. a repeating tf.data pipeline)."""
        ...

    def length(self) -> int | None:
        """Elements per epoch, when known without reading them."""
        ...

    def peek(self, n: int) -> Peek:
        """Up to ``n`` elements (indexed sources at spread positions) with what they cost."""
        ...

    def infer(self, n: int, peek: Peek | None) -> Inference:
        """The spec of the elements (from ``peek`` when given, else from what the source knows)."""
        ...

    def with_label(self, label: Any) -> Source:
        """The same source with label columns split off (Keras's ``(features, labels)``)."""
        ...

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task | None:
        """A picklable ``index -> element`` for worker processes, or None when the source has no index."""
        ...

    def build(self, plan: BuildPlan) -> Built:
        """The tf.data.Dataset of the elements, as the plan says."""
        ...

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        """The elements in order as the source gives them (a one-shot source keeps them for later passes)."""
        ...

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        """Check the first ``limit`` elements (None: all) against ``spec``; return how many were checked.
        Without ``problems`` the first mismatch raises; with it, mismatches are collected there."""
        ...

    def parts(self, n: int) -> Sequence[Source]:
        """Up to ``n`` disjoint sources that together hold every element, in order (one when it cannot split)."""
        ...


def call_user(fn: Callable[..., T], index: int | None, *args: Any, where: str | None = None) -> T:
    """Run user code; anything it raises becomes SourceError with the index and the original traceback.

    StopIteration passes through only from ``next`` (the end of a stream); from any other code it is an error.
    So are ``SystemExit`` and other ``BaseException`` subclasses raised by the source's code (a ``sys.exit`` in a
    data loader must not end the training process, or a worker, without a word); only Ctrl-C
    (``KeyboardInterrupt``) and a generator being closed (``GeneratorExit``) pass through. ``where`` names what
    was called when it is no element (a hook such as ``on_epoch_end``).
    """
    try:
        return fn(*args)
    except (TfBridgeError, KeyboardInterrupt, GeneratorExit):
        raise
    except StopIteration as exc:
        if fn is next:
            raise
        raise source_error(exc, index, where=where) from exc
    except BaseException as exc:
        raise source_error(exc, index, where=where) from exc


_RAISED_HERE = "\nHint: the source's own code raised this (traceback above)."
_RAISED_IN_TF_DATA = "\nHint: the source's own code raised this (traceback below)."


def source_error(
    exc: BaseException, index: int | None, *, remote: bool = False, hint: str | None = None, where: str | None = None
) -> SourceError:
    """SourceError for ``exc``. In-process the original is chained (``raise ... from exc``) so its traceback
    prints with it, above this error (``TfDataEpochs`` says below when the error reaches the user inside
    TensorFlow's); from another process (``remote=True``) the traceback text goes into the message, after
    ``hint`` when one is given."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = where or (f"element {index}" if index is not None else "the source")
    msg = f"{where}: {type(exc).__name__}: {exc}{_RAISED_HERE}"
    if remote:
        said = f"{hint}\nThe source's own code raised this" if hint else "the source's own code raised this"
        msg = f"{where}: {type(exc).__name__}: {exc}\nHint: {said}; its traceback:\n{tb}"
    return SourceError(msg, index=index, traceback=tb)


def remote_error(exc: BaseException, index: int | None) -> BaseException:
    """What a worker in another process sends back for ``exc``: a SourceError whose chained original cannot
    travel gets the original's traceback in its message; user exceptions become such a SourceError."""
    if isinstance(exc, SourceError) and exc.__cause__ is not None:
        return source_error(exc.__cause__, index, remote=True)
    if isinstance(exc, TfBridgeError):
        return exc
    return source_error(exc, index, remote=True)


# While tfbridge reads a dataset of its own (``as_raised``), the errors its steps raise are collected here, one list
# per such read; outside those reads nothing is kept (an error holds its traceback, and through it the source)
_COLLECTING: list[list[BaseException]] = []
_COLLECTING_LOCK = threading.Lock()


def into_tf_data(exc: BaseException) -> BaseException:
    """``exc``, about to be raised inside a tf.data step, where TensorFlow wraps it in its own op error: a
    SourceError's hint then says the traceback is below; while :func:`as_raised` reads, it keeps the error to
    give it back as it was."""
    if isinstance(exc, SourceError):
        text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else ""
        if text.endswith(_RAISED_HERE):
            exc.args = (text[: -len(_RAISED_HERE)] + _RAISED_IN_TF_DATA,)
    if isinstance(exc, TfBridgeError):
        with _COLLECTING_LOCK:
            for collected in _COLLECTING:
                collected.append(exc)
    return exc


@contextlib.contextmanager
def as_raised() -> Iterator[None]:
    """For tfbridge's own reads of a dataset it built, before the user iterates anything (pad_batch's pass over
    the lengths, adapt_normalization's statistics): an op error that carries one of tfbridge's errors raised in
    a step is that error, raised as it is (``except tb.SourceError`` catches it, with ``.index``)."""
    import tensorflow as tf

    collected: list[BaseException] = []
    with _COLLECTING_LOCK:
        _COLLECTING.append(collected)
    try:
        yield
    except tf.errors.OpError as op_error:
        text = str(op_error.message)
        with _COLLECTING_LOCK:
            candidates = list(reversed(collected))
        for exc in candidates:
            message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
            if f"{type(exc).__name__}: {message.splitlines()[0]}" in text:
                if isinstance(exc, SourceError) and message.endswith(_RAISED_IN_TF_DATA):
                    exc.args = (message[: -len(_RAISED_IN_TF_DATA)] + _RAISED_HERE,)
                raise exc from exc.__cause__  # its own cause (the source's exception) printed above it
        raise
    finally:
        with _COLLECTING_LOCK:
            _COLLECTING[:] = [c for c in _COLLECTING if c is not collected]  # by identity: empty lists are equal


class TfDataEpochs:
    """``epochs`` as ``tf.data.Dataset.from_generator`` calls them. A SourceError raised in them reaches the user
    inside TensorFlow's op error, whose message puts the original traceback after tfbridge's message: its hint
    says so."""

    def __init__(self, epochs: Callable[[], Iterator[Any]]) -> None:
        self.epochs = epochs

    def __call__(self) -> Iterator[Any]:
        try:
            yield from self.epochs()
        except TfBridgeError as exc:
            into_tf_data(exc)
            raise


def nbytes(element: Any) -> int:
    return sum(int(getattr(leaf, "nbytes", 0) or 0) for leaf in _nest.flatten(_nest.normalize(element))[0])


def queued_time() -> float:
    """Seconds this thread has spent ready to run but waiting for a core (Linux: ``/proc/thread-self/schedstat``;
    0.0 where the system does not say). On a busy machine this is the part of an element's wall time that is
    neither the source's own CPU time nor its waiting (I/O, sleeps), so it must not count as either."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


_BIG_ELEMENT_BYTES = 8 << 20  # elements this big are timed again in reused memory (see Peek.steady)


def timed(produce: Callable[[int], Any], indices: Sequence[int], *, again: bool = False) -> Peek:
    """Produce the elements at ``indices`` (stopping early at StopIteration), measuring what they cost. With
    ``again`` (a source that can be read again at an index), big elements are timed once more: the first index
    made twice, the first result dropped, the second timed (``Peek.again``)."""
    out = Peek()
    collecting = gc.isenabled()
    gc.disable()  # a collection's pause (and the finalizers it runs) is not the source's cost
    seen: list[tuple[Any, bytes]] = []  # the arrays of the samples so far (held by them), as they were made
    try:
        for i in indices:
            cost, element = _timed_one(produce, i)
            if cost is None:
                break
            out.reused_memory = out.reused_memory or overwritten(element, seen)
            seen += [(a, _fingerprint(a)) for a in arrays_of(element)]
            out.wall_s += cost[0]
            out.cpu_s += cost[1]
            out.queued_s += cost[2]
            out.nbytes += cost[3]
            out.costs.append(cost)
            out.samples.append((i, element))
        if again and out.samples and out.nbytes >= _BIG_ELEMENT_BYTES * out.count:
            first = out.samples[0][0]
            for _ in range(2):
                cost, element = _timed_one(produce, first)
                del element  # freed before the second is made: it reuses this memory, as a pass does
            if cost is not None:
                out.again = cost[:3]
    finally:
        if collecting:
            gc.enable()
    return out


def arrays_of(element: Any) -> list[Any]:
    """The numpy arrays (not empty) of ``element``'s fields."""
    import numpy as np

    return [v for v in _nest.flatten(element)[0] if type(v) is np.ndarray and v.size]


def _fingerprint(array: Any) -> bytes:
    """Up to 4,096 of ``array``'s values, spread over it (a copy of them, as bytes)."""
    if not (array.flags.c_contiguous or array.flags.f_contiguous) and array.ndim:
        array = array[:: max(1, len(array) // 64)]  # a strided view: a few of its rows, not a copy of it all
    flat = array.ravel(order="K")  # a view of any contiguous array
    return bytes(flat[:: max(1, flat.size // 4096)].tobytes())


def overwritten(element: Any, seen: list[tuple[Any, bytes]]) -> bool:
    """Whether making ``element`` changed an array made before it (``seen``: the arrays of earlier elements,
    still alive, with their fingerprints as they were made) in memory ``element``'s arrays lie in. A source
    that fills one buffer and returns it (or views of it) for every element does this; views of one array
    that nothing writes (rows of a big array, a constant mask returned with every element) do not."""
    import numpy as np

    return any(
        np.may_share_memory(a, b) and _fingerprint(b) != before for a in arrays_of(element) for b, before in seen
    )


def changed(element: Any, copy: Any) -> bool:
    """Whether an array of ``element`` no longer holds what ``copy`` (made of it with :func:`detached`) holds."""
    now, then = arrays_of(element), arrays_of(copy)
    return len(now) != len(then) or any(a.tobytes() != b.tobytes() for a, b in zip(now, then, strict=True))


def detached(element: Any) -> Any:
    """``element`` with each numpy array copied: what it holds stays as it is when its source fills the same
    buffer for the next element."""
    import numpy as np

    leaves, treespec = _nest.flatten(element)
    if not any(type(v) is np.ndarray for v in leaves):
        return element
    return _nest.unflatten(treespec, [v.copy() if type(v) is np.ndarray else v for v in leaves])


def _timed_one(produce: Callable[[int], Any], i: int) -> tuple[tuple[float, float, float, int] | None, Any]:
    """Element ``i`` and (wall, cpu, queued, bytes) it cost; (None, None) at StopIteration."""
    queued, wall, cpu = queued_time(), time.perf_counter(), time.thread_time()
    try:
        element = produce(i)
    except StopIteration:
        return None, None
    return (time.perf_counter() - wall, time.thread_time() - cpu, queued_time() - queued, nbytes(element)), element


def infer_from_peek(
    source: Source,
    peek: Peek,
    *,
    empty: str = "reading it gave no element",
    hint: str = "check that the source holds data.",
) -> Inference:
    """The spec of peeked samples. An empty peek is an empty source: ``empty`` says how that showed and ``hint``
    what to do, as fits the kind of source."""
    from tfbridge.spec import infer

    if not peek.samples:
        msg = f"the source {source.name} is empty: {empty}, so there is no element to infer a spec from.\nHint: {hint}"
        raise SpecInferenceError(msg)
    return infer(peek.samples, source.batched)


_DECIDE_PEEK = 8  # elements read to decide batches-or-examples when the kind of source has no convention


def decide_batched(
    samples: Sequence[tuple[int, Any]],
    name: str,
    default: bool = True,
    why: str = "the Keras convention for generators and __getitem__ sources",
) -> bool:
    """Batches or single examples, for a source whose kind has no convention, from its elements.

    - a field without a leading axis (a scalar), or fields whose leading sizes differ within one element: examples;
    - two or more fields led by one size in each element, the same in every element up to the last ones, whose
      size is one smaller size (a short last batch; several for interleaved parts): batches;
    - otherwise the data cannot tell (one size everywhere; a single field whose length varies: a batch of
      scalars or one variable-length example; fields sharing a size that varies otherwise: variable-length
      examples, such as tokens and their tags, or batches of varying size). Then ``default`` decides (``why``
      says where it comes from) and a TfBridgeWarning says so and how to say otherwise.
    An empty peek decides nothing (``default``); the empty source is reported where the spec is inferred.
    """
    import warnings

    from tfbridge._checks import find_stacklevel
    from tfbridge._values import ValueProblem, describe
    from tfbridge.errors import TfBridgeWarning

    leading: list[int | None] = []
    fields = 0
    for _, element in samples:
        sizes: set[int | None] = set()
        values = _nest.flatten(_nest.normalize(element))[0]
        fields = len(values)
        for value in values:
            try:
                shape = describe(value).shape
            except ValueProblem:
                return default  # the spec inference names the bad field
            if not shape:
                return False
            sizes.add(shape[0])
        if len(sizes) > 1:
            return False
        leading.extend(sizes)
    known = {n for n in leading if n is not None}
    if not samples:
        return default
    if len(known) > 1 and fields > 1:
        full = leading[0]
        k = next(i for i, n in enumerate(leading) if n != full)
        tail = set(leading[k:])
        short = tail.pop() if len(tail) == 1 else None
        enough = k >= 2  # the full size seen twice at least: two elements alone ([7, 3]) cannot tell
        if full is not None and short is not None and short < full and enough:
            return True  # one size, then a smaller one at the end (interleaved: each part's): a short last batch
        what = (
            "fields that share one leading size within each element, a size that varies between elements "
            f"({', '.join(str(n) for n in leading)}: the lengths of variable-length examples, or batches of "
            "varying size)"
        )
    elif len(known) == 1:
        what = f"a leading axis of {known.pop()}"
    else:
        what = "one field whose leading size varies"
    taken = "a batch" if default else "a single example"
    warnings.warn(
        f"{name}: every peeked element has {what}, so an element could be a batch or a single example; it is "
        f"taken as {taken} ({why}).\n"
        "Hint: pass batched=False if each element is one example, or batched=True if it is a batch (either also "
        "silences this).",
        TfBridgeWarning,
        stacklevel=find_stacklevel(),
    )
    return default


def check_elements(elements: Iterator[Any], spec: Spec, limit: int | None, problems: Problems | None = None) -> int:
    """Conform each element in order against ``spec``. SpecMismatchError names the first that breaks it, or,
    with ``problems``, each is collected there and the pass goes on (``problems.raise_found`` at the end)."""
    from tfbridge.validate import Conformer

    conform = Conformer(spec, finite=problems is not None and problems.finite)
    count = 0
    while limit is None or count < limit:
        try:
            element = call_user(next, count, elements)
        except StopIteration:
            break
        if problems is None:
            conform(element, count)
        else:
            problems.check(conform, element, count)
        count += 1
    return count


class Problems:
    """The mismatches of a validation pass, collected up to ``limit`` (then the pass stops with them)."""

    def __init__(self, limit: int, finite: bool) -> None:
        self.limit, self.finite = limit, finite
        self.found: list[SpecMismatchError] = []

    def check(self, conform: Callable[..., Any], element: Any, index: int | None, rows: Any = None) -> None:
        try:
            conform(element, index, rows)
        except SpecMismatchError as exc:
            self.found.append(exc)
            if len(self.found) >= self.limit:
                self.raise_found(stopped=True)

    def raise_found(self, stopped: bool = False) -> None:
        if not self.found:
            return
        first = self.found[0]
        if len(self.found) == 1:
            raise first
        more = f" (stopped at max_problems={self.limit}; there may be more)" if stopped else ""
        lines = [str(e).split("\nHint:")[0] for e in self.found]
        msg = (
            f"{len(self.found)} elements do not fit the spec{more}:\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\nHint:"
            + str(first).split("\nHint:", 1)[-1]
        )
        raise type(first)(
            msg, index=first.index, path=first.path, expected=first.expected, got=first.got, problems=tuple(self.found)
        ) from first


def check_peek(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        msg = f"peek must be at least 1. Received: peek={short(n)}"
        raise TfBridgeError(msg)

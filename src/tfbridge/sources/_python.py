"""The route of Python sources into tf.data: elements produced by an executor (indexed sources) or read in
order (streams), each checked and converted where it is produced, entering tf.data through
``from_generator`` with the spec's signature. Small elements of an indexed source travel in chunks.

Each call of a generator by tf.data is one epoch: in order, or in a fresh permutation when shuffled.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from tfbridge import _chunks, _nest
from tfbridge._checks import find_stacklevel
from tfbridge.errors import TfBridgeError, TfBridgeWarning
from tfbridge.executors._base import STALL
from tfbridge.sources._base import BuildPlan, Runner, Task, TfDataEpochs, call_user, detached, into_tf_data
from tfbridge.validate import Conformer, to_tensors

POSITIONED = True  # False: every Python source through from_generator, as before the index-driven route (benchmarks)


_STEP_OUT_S = 0.25  # a step waiting this long for one element returns to TensorFlow, to be asked again

class IndexedTask:
    """Produce (and conform) element ``i`` of an indexed object: picklable, for worker processes."""

    def __init__(self, get: Callable[[int], Any], conform: Callable[[Any, int], Any] | None) -> None:
        self.get, self.conform = get, conform

    def __call__(self, index: int) -> Any:
        element = call_user(self.get, index, int(index))
        if self.conform is None:
            return _nest.normalize(element)
        return self.conform(element, int(index))


def bucketing_for(plan: BuildPlan, *, stream: bool = False) -> Any:
    """pad_batch's buckets made where the elements are (``_positions.Bucketing``), or None when tf.data buckets
    them: no buckets asked, the comparison route, or a stream shared between pipelines (each keeps every k-th
    element, after which its batches are made)."""
    if plan.buckets is None or plan.batch_size is None or plan.padding is None or not POSITIONED:
        return None
    if stream and plan.shard is not None:
        return None
    import tensorflow as tf

    from tfbridge.batching import length_axis
    from tfbridge.sources._positions import Bucketing

    pads = tuple(leaf.numpy() for leaf in tf.nest.flatten(plan.padding))  # text: bytes
    return Bucketing(
        tuple(plan.buckets), plan.batch_size, pads, length_axis(plan.spec.signature), plan.drop_remainder
    )


class Detaching:
    """A conformer whose elements own their memory (``BuildPlan.detach``): each array copied once conformed."""

    def __init__(self, conform: Conformer) -> None:
        self.conform, self.check = conform, conform.check

    def __call__(self, element: Any, index: int | None, rows: Any = None) -> Any:
        return detached(self.conform(element, index, rows))


def conformer_for(plan: BuildPlan) -> Conformer | Detaching:
    """Elements are checked unless validate="none"; ragged and sparse fields always need converting, and dense
    fields converting to the spec's dtypes (the float cast). Copied too, when the source reuses its buffer."""
    dense = all(leaf.kind == "dense" for _, leaf in plan.spec.fields())
    conform = Conformer(plan.spec, finite=plan.finite, check=plan.conform or plan.finite or not dense)
    return Detaching(conform) if plan.detach else conform


def from_generator(epochs: Callable[[], Iterator[Any]], plan: BuildPlan, chunk: bool) -> Any:
    import tensorflow as tf

    if plan.errors is not None:
        epochs = _Catching(epochs, plan.errors)
    signature = _chunks.chunk_signature(plan.spec.signature) if chunk else plan.spec.signature
    ds = generator_dataset(TfDataEpochs(epochs), signature)
    if not chunk:
        return ds
    # split chunks with from_tensor_slices, not unbatch(): TensorFlow 2.21's unbatch crashes the process on
    # zero-size elements (e.g. shape (2, 0), or an empty batch)
    as_tuple = isinstance(signature, tuple)  # tf.data passes a tuple's parts as separate arguments

    def slices(*parts: Any) -> Any:
        return tf.data.Dataset.from_tensor_slices(parts if as_tuple else parts[0])

    return ds.flat_map(slices)


def generator_dataset(epochs: Callable[[], Iterator[Any]], signature: Any) -> Any:
    """``tf.data.Dataset.from_generator(epochs)``, except that an error of a pass is raised after its generator
    has ended, by a step that calls no Python when asked again.

    After an error, tf.data's prefetch thread asks its input for the next element at once. Asked of the
    generator, that is a Python call needing the GIL, while the thread that received the error may already be
    dropping the iterator, holding the GIL and waiting for the prefetch thread: a deadlock (seen as a script
    that never exits after ``ElementTimeoutError``). Here the pass's generator ends instead, its error kept under
    the pass's id; a one-element check after it raises the error; asked again, only TensorFlow's own
    ``from_tensors`` answers (end of sequence), without Python.
    """
    import tensorflow as tf

    failures = _Failures(epochs)

    def one_pass(pass_id: Any) -> Any:
        elements = tf.data.Dataset.from_generator(failures.run, args=(pass_id,), output_signature=signature)
        # take_while (unlike map) passes its predicate's error on as it is, so the message still begins with
        # the tfbridge class; the predicate is False when there is no error: no element
        check = tf.data.Dataset.from_tensors(pass_id).take_while(
            lambda p: tf.numpy_function(failures.raise_for, [p], tf.int64, stateful=True) < 0
        )
        return elements.concatenate(check.flat_map(lambda _: elements.take(0)))

    pass_ids = tf.data.Dataset.from_tensors(0).map(
        lambda _: tf.random.uniform((), maxval=2**62, dtype=tf.int64)  # one id per iterator (pass)
    )
    return pass_ids.flat_map(one_pass)


class _Failures:
    """The error each pass ended with, by pass id, until the check after the pass raises it."""

    def __init__(self, epochs: Callable[[], Iterator[Any]]) -> None:
        self.epochs = epochs
        self.errors: dict[int, BaseException] = {}

    def run(self, pass_id: Any) -> Iterator[Any]:
        try:
            yield from self.epochs()
        except Exception as exc:
            self.errors[int(pass_id)] = exc

    def raise_for(self, pass_id: Any) -> np.ndarray:
        error = self.errors.pop(int(pass_id), None)
        if error is not None:
            raise into_tf_data(error)
        return np.asarray(pass_id, dtype=np.int64)


def build_indexed(
    plan: BuildPlan,
    *,
    name: str,
    length: Callable[[], int],
    task: Task,
    indices: Sequence[int] | np.ndarray | None,
    on_epoch_begin: Callable[[], None],
    on_epoch_end: Callable[[], None],
) -> Any:
    """The dataset of an indexed source: ``indices`` (None: every index, with epoch hooks) through the runner, on
    the index-driven route (its position in tf.data's state: checkpointable)."""
    import tensorflow as tf

    from tfbridge.sources import _positions

    assert plan.runner is not None
    workers = max(plan.runner.workers, 1)
    chunk = conformer_for(plan).check and _chunks.worth_chunking(
        plan.spec, plan.bytes_per_element, plan.seconds_per_element / workers
    )
    epochs = _IndexedEpochs(plan, name, length, task, indices, chunk, on_epoch_begin, on_epoch_end)
    warm = getattr(plan.runner, "warm", None)
    if warm is not None and plan.warm:  # worker processes start while the rest is built (and a model, before fit)
        warm(task)
    bucketing = bucketing_for(plan)
    if POSITIONED:
        passes = _positions.Passes(
            epochs, plan.spec.signature, epochs.seed, plan.seed is not None, plan.errors, bucketing
        )
        ds = _positions.positioned_dataset(passes, plan.spec.signature)
        _positions.attach(ds, passes)
    else:
        ds = from_generator(epochs, plan, chunk)
    if plan.errors is not None or bucketing is not None:  # a failed pass ends short; batches: counted by pad_batch
        return ds
    return ds.apply(tf.data.experimental.assert_cardinality(epochs.count))


def build_stream(plan: BuildPlan, *, name: str, iterate: Callable[[], Iterator[Any]], one_shot: bool) -> Any:
    """The dataset of a stream: read in order each pass, on the index-driven route, so an iterator over it can be
    checkpointed: restoring reads the stream again and drops what came before the saved
    position (a one-shot iterator cannot be read again: restoring it mid-pass is refused)."""
    from tfbridge.sources import _positions

    if one_shot:
        warnings.warn(
            f"{name} is a one-shot iterator: the dataset gives one epoch of it; later epochs are empty.\n"
            "Hint: pass a generator function (the function, not its result) or a re-iterable for many epochs.",
            TfBridgeWarning,
            stacklevel=find_stacklevel(),
        )
    epochs = _StreamEpochs(iterate, conformer_for(plan), plan.timeout, name, one_shot)
    if POSITIONED:
        passes = _positions.Passes(epochs, plan.spec.signature, 0, True, plan.errors, bucketing_for(plan, stream=True))
        ds = _positions.positioned_dataset(passes, plan.spec.signature)
        _positions.attach(ds, passes)
    else:
        ds = from_generator(epochs, plan, chunk=False)
    if plan.shard is not None:  # a stream is read whole by every pipeline, each keeping its part
        ds = ds.shard(*plan.shard)
    return ds


def fresh_seed() -> int:
    """A seed from the operating system's entropy, for runs that were given none."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] % (2**63))


class _IndexedEpochs:
    """Called by tf.data at the start of each pass: one epoch, in order or in a fresh permutation."""

    def __init__(
        self,
        plan: BuildPlan,
        name: str,
        length: Callable[[], int],
        task: Task,
        indices: Sequence[int] | np.ndarray | None,
        chunk: bool,
        on_epoch_begin: Callable[[], None],
        on_epoch_end: Callable[[], None],
    ) -> None:
        assert plan.runner is not None
        self.runner: Runner = plan.runner
        self.name, self.length, self.task, self.indices, self.chunk = name, length, task, indices, chunk
        self.shuffle, self.shard = plan.shuffle, plan.shard
        self.begin_hook, self.end_hook = on_epoch_begin, on_epoch_end
        self.seed = plan.seed if plan.seed is not None else fresh_seed()
        self.epoch = 0
        self.size = length()  # the dataset's cardinality is fixed to this
        total = self.size if indices is None else len(indices)
        self.count = total if plan.shard is None else len(range(plan.shard[1], total, plan.shard[0]))

    def _checked_length(self) -> int:
        n = self.length()
        if n != self.size:
            msg = (
                f"len() of the source {self.name} was {self.size} when the dataset was made and is {n} now, "
                "but a dataset's length is fixed when it is made (Keras takes its steps per epoch from it).\n"
                "Hint: make a new dataset with tb.to_dataset after the source's length changes, or keep __len__ "
                "constant."
            )
            raise TfBridgeError(msg)
        return n

    # -- the index-driven route (sources._positions.Feed) ---------------------------------------------------
    def open(self, epoch: int, seed: int, position: int) -> Iterator[Any]:
        order: Any = self.indices
        if order is None:
            n = self._checked_length()
            # in order: a range, not an array of n positions (256 MB and tens of ms for 32M of them)
            order = np.random.default_rng([seed, epoch]).permutation(n) if self.shuffle else range(n)
        if self.shard is not None:  # one permutation for all pipelines (same seed); each takes every k-th
            order = order[self.shard[1] :: self.shard[0]]
        # STALL while an element keeps the pass waiting: a chunk's finished elements go, and the pass's step
        # returns to TensorFlow now and then (an iterator dropped meanwhile is not held up by a slow element)
        stall_s = _chunks.CHUNK_MAX_WAIT_S if self.chunk else _STEP_OUT_S
        return self.runner.imap(self.task, order[position:], stall_s, seeds=(seed, epoch))

    def begin(self) -> None:
        if self.indices is None:
            self.begin_hook()

    def end(self) -> None:
        if self.indices is None:
            self.end_hook()

    # -- the from_generator route (POSITIONED False: for comparisons) -------------------------------------------
    def __call__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.begin()
        with contextlib.closing(self.open(epoch, self.seed, 0)) as results:  # type: ignore[type-var]
            if self.chunk:
                yield from _chunks.chunked(results, STALL)
            else:
                for element in results:
                    if element is not STALL:
                        yield to_tensors(element)
        self.end()


class _Catching:
    """A pass that ends at its first error, which it keeps in ``errors`` (``Dataset.save`` hangs when its input
    fails, so materialize raises the error itself)."""

    def __init__(self, epochs: Callable[[], Iterator[Any]], errors: list[BaseException]) -> None:
        self.epochs, self.errors = epochs, errors

    def __call__(self) -> Iterator[Any]:
        try:
            yield from self.epochs()
        except Exception as exc:
            self.errors.append(exc)


class _StreamEpochs:
    """A stream's passes: for ``from_generator`` (called once per pass) and for the index-driven route
    (:meth:`open` at a position, reading again and dropping what comes before it)."""

    chunk = False
    count = None

    def __init__(
        self,
        iterate: Callable[[], Iterator[Any]],
        conform: Conformer | Detaching | None,
        timeout: float | None,
        name: str = "the stream",
        one_shot: bool = False,
    ) -> None:
        self.iterate, self.conform, self.timeout = iterate, conform, timeout
        self.name, self.one_shot = name, one_shot

    def __call__(self) -> Iterator[Any]:
        for element in self._elements():
            yield to_tensors(element)

    def open(self, epoch: int, seed: int, position: int) -> Iterator[Any]:
        if position and self.one_shot:
            msg = (
                f"cannot restore a pass over {self.name} at element {position}: it is a one-shot iterator, which "
                "cannot be read again to find that position.\nHint: pass a generator function (the function, "
                "not its result) or a re-iterable: a restored pass reads it again and drops the elements before "
                "the saved position."
            )
            raise TfBridgeError(msg)
        elements = self._elements()
        for _ in range(position):  # a restored pass: read again what the saved pass had consumed
            if next(elements, _END) is _END:
                msg = (
                    f"cannot restore a pass over {self.name} at element {position}: reading it again ended after "
                    f"{_} elements.\nHint: a stream restores by reading again, which needs it to give the same "
                    "elements each time it is read (a fixed order, no randomness without a seed)."
                )
                raise TfBridgeError(msg)
        return elements

    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass

    def _elements(self) -> Iterator[Any]:
        from tfbridge._timeout import call_within

        it = call_user(self.iterate, None)
        for index in itertools.count():
            try:
                if self.timeout is None:
                    element = call_user(next, index, it)
                else:
                    element = call_within(
                        lambda index=index: call_user(next, index, it),  # type: ignore[misc]
                        self.timeout,
                        index,
                        "the source's iterator had not produced it",
                    )
            except StopIteration:
                return
            yield _nest.normalize(element) if self.conform is None else self.conform(element, index)


_END = object()

"""to_dataset: the one place that builds a tf.data.Dataset from a source.

Three routes, one per kind of source:
- tf.data datasets stay in the graph (casts and shape fixes by ``map``);
- in-memory arrays become tensors once and are gathered by index inside tf.data (shuffled by index);
- Python sources (indexed or streams) run through an executor, each element checked and converted by the
  Conformer where it is produced, and enter tf.data through ``from_generator`` with the spec's signature.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tfbridge import _chunks, _nest, executors, sources
from tfbridge.errors import (
    SpecInferenceError,
    SpecMismatchError,
    TfBridgeError,
    TfBridgeWarning,
    check_int,
    short,
)
from tfbridge.executors._base import call_within
from tfbridge.sources import Arrays, Indexed, Source, Stream, TFDataSource, call_user
from tfbridge.spec import (
    CastFloats,
    Spec,
    add_batch_axis,
    apply_float_policy,
    format_shape,
)
from tfbridge.validate import Conformer, to_tensors

Validate = Literal["peek", "all", "none"]
_VALIDATE = ("peek", "all", "none")


@dataclass
class Plan:
    """What to_dataset decided, before building anything (the CLI prints it)."""

    source: Source
    spec: Spec  # the elements as delivered (float policy applied, or the spec given)
    choice: executors.Choice
    peeked: list[tuple[int, Any]]
    bytes_per_element: float = 0.0
    seconds_per_element: float = 0.0  # wall time of one element in the peek


class _Task:
    """Produce and conform element ``i`` of an indexed source (picklable for process executors)."""

    def __init__(self, source: Indexed, conformer: Conformer | None) -> None:
        self.source = source
        self.conformer = conformer

    def __call__(self, index: int) -> Any:
        element = call_user(self.source.get, index, int(index))
        if self.conformer is None:
            return _nest.normalize(element)
        return self.conformer(element, int(index))


def plan(
    source: Any,
    *,
    spec: Spec | Any = None,
    peek: int = 8,
    batched: bool | None = None,
    executor: str = "auto",
    workers: int | None = None,
    cast_floats: CastFloats = "floatx",
    validate: Validate = "peek",
    label: Any = None,
) -> Plan:
    if validate not in _VALIDATE:
        msg = f"validate must be one of {', '.join(map(repr, _VALIDATE))}. Received: {short(validate)}"
        raise TfBridgeError(msg)
    check_int("peek", peek)
    check_int("workers", workers, optional=True)
    if executor != "auto":
        executors.make(executor, workers)  # refuses unknown names whatever the source
    given = spec
    if isinstance(given, Spec) and batched is None:
        batched = given.batched
    src = sources.adapt(source, batched=batched, label=label)
    peek_result = src.peek(peek) if not isinstance(src, TFDataSource) and not _in_graph(src) else None
    peeked = peek_result.samples if peek_result else []
    if given is None:
        inferred = (
            src.spec(peek)
            if peek_result is None
            else _infer(peeked, src)
        )
        out_spec = apply_float_policy(inferred, cast_floats)
    else:
        out_spec = given if isinstance(given, Spec) else Spec.from_signature(given, batched=src.batched)
        if out_spec.batched != src.batched:
            msg = (
                f"the spec says batched={out_spec.batched} but the source {src.name} is taken as "
                f"batched={src.batched}.\nHint: pass batched={out_spec.batched} to read the source that way."
            )
            raise TfBridgeError(msg)
        if validate != "none":
            conformer = Conformer(out_spec)
            for index, element in peeked:
                conformer(element, index)
    if isinstance(src, TFDataSource):
        choice = executors.choose("native", 0, 0, 0)
    elif _in_graph(src):
        choice = executors.choose("arrays", 0, 0, 0)
    elif executor == "auto":
        pr = peek_result

        def pickles() -> str | None:
            try:
                executors.processes.dumps_task(_Task(src, Conformer(out_spec)))  # type: ignore[arg-type]
            except TfBridgeError as exc:
                return "the source does not pickle (" + str(exc).splitlines()[0].split(": ", 1)[-1] + ")"
            return None

        choice = executors.choose(src.kind, pr.wall_s, pr.cpu_s, pr.count, pr.nbytes, pickles)
        if workers is not None and choice.name != "serial":
            choice = executors.Choice(choice.name, workers, choice.reason + f" (workers={workers} as given)")
    else:
        made = executors.make(executor, workers)
        choice = executors.Choice(made.name, made.workers, "as given")
        if made.name in ("process", "ray") and isinstance(src, Indexed) and not _in_graph(src):  # say now, not at the first element
            executors.processes.dumps_task(_Task(src, None))
    count = max(peek_result.count, 1) if peek_result else 1
    per_bytes = peek_result.nbytes / count if peek_result else 0.0
    per_s = peek_result.wall_s / count if peek_result else 0.0
    return Plan(src, out_spec, choice, peeked, per_bytes, per_s)


def _in_graph(src: Source) -> bool:
    """In-memory rows are gathered inside tf.data; batched arrays go the Python way like any indexed source."""
    return isinstance(src, Arrays) and not src.batched


def _infer(peeked: list[tuple[int, Any]], src: Source) -> Spec:
    from tfbridge.spec import infer_from_samples

    if not peeked:
        msg = (
            f"the source {src.name} is empty: there is no element to infer a spec from.\n"
            "Hint: check that the source yields data (a one-shot iterator gives its elements only once)."
        )
        raise SpecInferenceError(msg)
    return infer_from_samples(peeked, src.batched)


def to_dataset(
    source: Any,
    *,
    spec: Spec | Any = None,
    peek: int = 8,
    batched: bool | None = None,
    executor: str = "auto",
    workers: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    cast_floats: CastFloats = "floatx",
    validate: Validate = "peek",
    batch_size: int | None = None,
    label: Any = None,
    timeout: float | None = None,
    ray_address: str | None = None,
    input_context: Any = None,
) -> Any:
    """A prefetched tf.data.Dataset of ``source``'s elements, in order, each exactly once per epoch.

    See the project's DESIGN for every argument; ``element_spec`` equals the spec after the float policy
    (or the ``spec`` given), with a leading batch axis when ``batch_size`` batches an unbatched source.
    ``timeout`` (seconds) bounds the wait for any one element of a Python source: a hung source or worker
    becomes ``ElementTimeoutError`` naming the element instead of a stall. ``ray_address`` is the Ray cluster
    ``executor="ray"`` connects to (default: Ray already running here, RAY_ADDRESS, or a new local instance).
    ``input_context`` (a ``tf.distribute.InputContext``, as ``distribute_datasets_from_function`` passes it)
    gives this input pipeline its own disjoint part of the source: every element goes to exactly one pipeline.
    """
    import tensorflow as tf

    check_int("batch_size", batch_size, optional=True)
    _check_timeout(timeout)
    if seed is not None and not isinstance(seed, int):
        msg = f"seed must be an int or None. Received: {short(seed)}"
        raise TfBridgeError(msg)
    p = plan(
        source,
        spec=spec,
        peek=peek,
        batched=batched,
        executor=executor,
        workers=workers,
        cast_floats=cast_floats,
        validate=validate,
        label=label,
    )
    out_batched = p.spec.batched or batch_size is not None
    if batch_size is not None:
        _check_batchable(p.spec, p.source)
    if shuffle and not isinstance(p.source, Indexed):
        msg = (
            f"shuffle=True needs random access, but the source {p.source.name} is a stream "
            "(a generator, iterator or tf.data pipeline) that can only be read in order.\n"
            "Hint: shuffle the result with dataset.shuffle(buffer_size), or pass an indexed source "
            "(a PyDataset/Sequence or an object with __len__ and __getitem__)."
        )
        raise TfBridgeError(msg)
    shard = _shard_of(input_context, shuffle, seed)
    if validate == "all":
        validate_source(p.source, p.spec)

    ex = None
    if isinstance(p.source, TFDataSource):
        ds = _from_tf_data(p.source.dataset, p.spec)
        if shard is not None:
            ds = ds.shard(*shard)
    elif isinstance(p.source, Arrays) and not p.spec.batched:
        ds = _from_arrays(p.source, p.spec, shuffle, seed, batch_size, shard)
        batch_size = None  # batched by index already
    else:
        dense = all(leaf.kind == "dense" for _, leaf in p.spec.fields())
        conformer = Conformer(p.spec) if validate != "none" or not dense else None  # ragged/sparse need converting
        ds, ex = _from_python(p, conformer, shuffle, seed, timeout, ray_address, shard=shard)
        if shard is not None and not isinstance(p.source, Indexed):  # a stream is read whole by every pipeline
            ds = ds.shard(*shard)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    result = ds.prefetch(tf.data.AUTOTUNE)
    sources.tfdata.remember(result, out_batched)
    if ex is not None:
        # workers live as long as the dataset (its iterators keep it alive); TensorFlow itself keeps the
        # generator callable forever, so the dataset object is what tells us it is gone
        weakref.finalize(result, ex.close)
    return result


def _shard_of(context: Any, shuffle: bool, seed: int | None) -> tuple[int, int] | None:
    """(number of input pipelines, this pipeline's id) from a tf.distribute.InputContext, checked."""
    if context is None:
        return None
    num = getattr(context, "num_input_pipelines", None)
    pid = getattr(context, "input_pipeline_id", None)
    if not isinstance(num, int) or not isinstance(pid, int) or num < 1 or not 0 <= pid < num:
        msg = (
            "input_context must be a tf.distribute.InputContext (num_input_pipelines >= 1 and "
            f"0 <= input_pipeline_id < num_input_pipelines). Received: {short(context)}\n"
            "Hint: pass the context that strategy.distribute_datasets_from_function hands to your function."
        )
        raise TfBridgeError(msg)
    if shuffle and seed is None and num > 1:
        msg = (
            f"shuffle=True across {num} input pipelines needs seed=: every pipeline must draw the same "
            "permutation, or their parts would overlap and miss elements.\n"
            "Hint: pass the same seed=... in every worker."
        )
        raise TfBridgeError(msg)
    return (num, pid) if num > 1 else None


def _check_timeout(timeout: Any) -> None:
    ok = timeout is None or (
        isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < float("inf")
    )
    if not ok:
        msg = f"timeout must be a positive number of seconds or None. Received: {short(timeout)}"
        raise TfBridgeError(msg)


def _check_batchable(spec: Spec, src: Source) -> None:
    if spec.batched:
        msg = (
            f"batch_size is for sources of single examples, but {src.name} is taken as batched "
            "(each element is already a batch).\n"
            "Hint: leave batch_size=None, or pass batched=False if each element is one example."
        )
        raise TfBridgeError(msg)
    for path, leaf in spec.fields():
        if leaf.kind == "dense" and None in leaf.shape:
            msg = (
                f"batch_size cannot stack {path}: its shape {format_shape(leaf.shape)} varies between "
                "examples.\nHint: use tb.pad_batch(source, batch_size) to pad each batch to its longest "
                "example (optionally bucketed)."
            )
            raise TfBridgeError(msg)


# ---- tf.data sources -------------------------------------------------------------------------------------


def _from_tf_data(ds: Any, spec: Spec) -> Any:
    import tensorflow as tf

    want = spec.signature
    if ds.element_spec == want:
        return ds
    have_leaves, _ = _nest.flatten(_nest.normalize(ds.element_spec))
    want_leaves, want_tree = _nest.flatten(want)
    if len(have_leaves) != len(want_leaves):
        msg = (
            f"the dataset's elements do not have the spec's structure.\nExpected: {short(want)}\n"
            f"Received: {short(ds.element_spec)}"
        )
        raise TfBridgeError(msg)
    paths = [p for p, _ in spec.fields()]
    for path, have, wanted in zip(paths, have_leaves, want_leaves):
        if type(have) is not type(wanted) or not _shape_fits(have.shape, wanted.shape):
            msg = (
                f"the dataset's {path} is {have}, which does not fit the spec's {wanted}.\n"
                "Hint: pass a spec that matches the dataset, or map the dataset first."
            )
            raise TfBridgeError(msg)
        if _lossy(have.dtype, wanted.dtype):
            msg = (
                f"the dataset's {path} is {have.dtype.name} and the spec says {wanted.dtype.name}: casting inside "
                "the graph would wrap or truncate values without a word.\n"
                "Hint: give the spec the dataset's dtype, or cast in the dataset yourself (dataset.map) if the "
                "values are known to fit."
            )
            raise SpecMismatchError(msg, path=path, expected=wanted.dtype.name, got=have.dtype.name)

    def fix(*element: Any) -> Any:
        element = element[0] if len(element) == 1 else element
        leaves, _ = _nest.flatten(_nest.normalize(element))
        out = []
        for value, wanted in zip(leaves, want_leaves):
            if isinstance(wanted, tf.TensorSpec):
                if value.dtype != wanted.dtype:
                    value = tf.cast(value, wanted.dtype)
                if value.shape != wanted.shape:  # loosen static dims the spec leaves open (batch axis)
                    loose = tf.compat.v1.placeholder_with_default(value, shape=[None] * wanted.shape.rank)
                    value = tf.ensure_shape(loose, wanted.shape)
            elif value.dtype != wanted.dtype:
                value = tf.cast(value, wanted.dtype) if isinstance(value, tf.RaggedTensor) else tf.sparse.map_values(
                    tf.cast, value, wanted.dtype
                )
            out.append(value)
        return _nest.unflatten(want_tree, out)

    return ds.map(fix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _lossy(have: Any, want: Any) -> bool:
    """A graph cast from ``have`` to ``want`` that can change values (float to int, narrower ints, to bool)."""
    if have == want:
        return False
    if want.is_bool:
        return True
    if want.is_integer:
        if not have.is_integer:
            return not have.is_bool
        return have.size > want.size or (have.is_unsigned != want.is_unsigned and have.size >= want.size) or (
            not have.is_unsigned and want.is_unsigned
        )
    return have == "string" or want == "string"


def _shape_fits(have: Any, want: Any) -> bool:
    if have.rank is None:
        return True
    if have.rank != want.rank:
        return False
    return all(w is None or h is None or h == w for h, w in zip(have.as_list(), want.as_list()))


# ---- in-memory arrays ------------------------------------------------------------------------------------


def _from_arrays(
    src: Arrays,
    spec: Spec,
    shuffle: bool,
    seed: int | None,
    batch_size: int | None,
    shard: tuple[int, int] | None = None,
) -> Any:
    import tensorflow as tf

    columns = Conformer(_column_spec(spec, src.columns))(src.columns, None)
    # eager tensors are captured as inputs of the map function, never embedded in the graph as constants
    tensors = tf.nest.map_structure(
        lambda v: v if isinstance(v, (tf.RaggedTensor, tf.SparseTensor)) else tf.convert_to_tensor(v),
        to_tensors(columns),
    )
    n = len(src)
    order = tf.data.Dataset.range(n)
    if shuffle:
        order = order.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if shard is not None:  # the same permutation everywhere (one seed), then every pipeline its own part
        order = order.shard(*shard)
    if batch_size is not None:
        order = order.batch(batch_size)
    return order.map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), tensors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _column_spec(spec: Spec, columns: Any) -> Spec:
    """The spec of whole columns: a batch axis on every field; a column of rows whose first dimension varies
    (e.g. token lists in a DataFrame) is held as a ragged tensor, and gathering one row gives it back dense."""
    from tfbridge.spec import Leaf

    batched = add_batch_axis(spec)
    arrays = _nest.flatten(columns)[0]

    def column_leaf(leaf: Leaf, array: Any) -> Leaf:
        varies_first = leaf.kind == "dense" and leaf.rank >= 2 and leaf.shape[1] is None
        if varies_first and getattr(array, "dtype", None) == object and None not in leaf.shape[2:]:
            return Leaf(leaf.shape, leaf.dtype, "ragged", 1)
        return leaf

    leaves, treespec = _nest.flatten(batched.structure)
    return Spec(_nest.unflatten(treespec, [column_leaf(lf, a) for lf, a in zip(leaves, arrays)]), True)


# ---- Python sources --------------------------------------------------------------------------------------


def _from_python(
    p: Plan,
    conformer: Conformer | None,
    shuffle: bool,
    seed: int | None,
    timeout: float | None = None,
    ray_address: str | None = None,
    *,
    ex: Any = None,
    indices: Any = None,
    errors: list[BaseException] | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[Any, Any]:
    """The dataset of a Python source and the executor it runs on (``ex`` reused when given). ``indices``
    restricts an indexed source to those elements, in that order, without epoch hooks (materialize's parts).
    With an ``errors`` list, a pass that fails ends early and leaves its error there instead of raising it into
    tf.data (``Dataset.save`` hangs when its input fails)."""
    import tensorflow as tf

    src = p.source
    # a stream is never chunked: its next element may only come once this one is consumed
    interval = p.seconds_per_element / max(p.choice.workers, 1)
    chunk = (
        conformer is not None
        and isinstance(src, Indexed)
        and _chunks.worth_chunking(p.spec, p.bytes_per_element, interval)
    )
    signature = _chunks.chunk_signature(p.spec.signature) if chunk else p.spec.signature

    def from_generator(epochs: Any) -> Any:
        if errors is not None:
            epochs = _Catching(epochs, errors)
        ds = tf.data.Dataset.from_generator(epochs, output_signature=signature)
        if not chunk:
            return ds
        # split chunks with from_tensor_slices, not unbatch(): TensorFlow 2.21's unbatch crashes the process on
        # zero-size elements (e.g. shape (2, 0), or an empty batch)
        as_tuple = isinstance(signature, tuple)  # tf.data passes a tuple's parts as separate arguments

        def slices(*parts: Any) -> Any:
            return tf.data.Dataset.from_tensor_slices(parts if as_tuple else parts[0])

        return ds.flat_map(slices)

    if isinstance(src, Indexed):
        if ex is None:
            ex = executors.make(
                p.choice.name, p.choice.workers or None, seed=seed, timeout=timeout, address=ray_address
            )
        epochs = _IndexedEpochs(src, conformer, ex, shuffle, seed, chunk, indices, shard)
        count = len(src) if indices is None else len(indices)
        if shard is not None:
            count = len(range(shard[1], count, shard[0]))
        if errors is not None:  # a failed pass ends short, and must end without another error
            return from_generator(epochs), ex
        return from_generator(epochs).apply(tf.data.experimental.assert_cardinality(count)), ex
    assert isinstance(src, Stream)
    if src.one_shot:
        warnings.warn(
            f"{src.name} is a one-shot iterator: the dataset gives one epoch of it; later epochs are empty.\n"
            "Hint: pass a generator function (the function, not its result) or a re-iterable for many epochs.",
            TfBridgeWarning,
            stacklevel=3,
        )
    return from_generator(_StreamEpochs(src, conformer, timeout)), None


class _IndexedEpochs:
    """Called by tf.data at the start of each pass: one epoch, in order or in a fresh permutation."""

    def __init__(
        self,
        src: Indexed,
        conformer: Conformer | None,
        ex: Any,
        shuffle: bool,
        seed: int | None,
        chunk: bool,
        indices: Any = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.shard = shard
        self.src, self.executor, self.shuffle, self.chunk, self.indices = src, ex, shuffle, chunk, indices
        self.task = _Task(src, conformer)
        self.seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**63))
        self.epoch = 0
        self.size = len(src)  # the dataset's cardinality is fixed to this

    def order(self, epoch: int, n: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _length(self) -> int:
        n = len(self.src)
        if n != self.size:
            msg = (
                f"len() of the source {self.src.name} was {self.size} when the dataset was made and is {n} now, "
                "but a dataset's length is fixed when it is made (Keras takes its steps per epoch from it).\n"
                "Hint: make a new dataset with tb.to_dataset after the source's length changes, or keep __len__ "
                "constant."
            )
            raise TfBridgeError(msg)
        return n

    def __call__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        hooks = self.indices is None
        if hooks:
            self.src.on_epoch_begin()
        order = self.order(epoch, self._length()) if self.indices is None else self.indices
        if self.shard is not None:  # one permutation for all pipelines (same seed); each takes every k-th
            order = order[self.shard[1] :: self.shard[0]]
        with contextlib.closing(self.executor.imap(self.task, order)) as results:
            if self.chunk:
                yield from _chunks.chunked(results)
            else:
                for element in results:
                    yield to_tensors(element)
        if hooks:
            self.src.on_epoch_end()


class _Catching:
    """A pass that ends at its first error, which it keeps in ``errors``."""

    def __init__(self, epochs: Any, errors: list[BaseException]) -> None:
        self.epochs, self.errors = epochs, errors

    def __call__(self) -> Iterator[Any]:
        try:
            yield from self.epochs()
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            self.errors.append(exc)


class _StreamEpochs:
    def __init__(self, src: Stream, conformer: Conformer | None, timeout: float | None = None) -> None:
        self.src, self.conformer, self.timeout = src, conformer, timeout

    def __call__(self) -> Iterator[Any]:
        for element in self._elements():
            yield to_tensors(element)

    def _elements(self) -> Iterator[Any]:
        it = call_user(self.src.iterate, None)
        for index in itertools.count():
            try:
                if self.timeout is None:
                    element = call_user(next, index, it)
                else:
                    element = call_within(
                        lambda index=index: call_user(next, index, it),
                        self.timeout,
                        index,
                        "the source's iterator had not produced it",
                    )
            except StopIteration:
                return
            yield _nest.normalize(element) if self.conformer is None else self.conformer(element, index)


# ---- validate -----------------------------------------------------------------------------------------------


def validate_source(
    source: Any, spec: Spec | Any = None, *, limit: int | None = None, batched: bool | None = None
) -> int:
    """Check the first ``limit`` elements (None: all) against ``spec`` (None: inferred); return how many.

    Raises SpecMismatchError on the first element that does not fit, naming its index and field.
    """
    check_int("limit", limit, minimum=0, optional=True)
    if isinstance(spec, Spec) and batched is None:
        batched = spec.batched
    src = sources.adapt(source, batched=batched)
    if spec is None:
        spec = src.spec(8)
    elif not isinstance(spec, Spec):
        spec = Spec.from_signature(spec, batched=src.batched)
    conformer = Conformer(spec)
    if isinstance(src, Arrays) and not src.batched:
        n = len(src) if limit is None else min(limit, len(src))
        batch_conformer = Conformer(add_batch_axis(spec))
        try:
            batch_conformer(_nest.map_structure(lambda a: a[:n], src.columns), None)
        except TfBridgeError:
            for i in range(n):  # find the first row that breaks it, for the message
                conformer(src.get(i), i)
            raise
        return n
    if isinstance(src, Indexed):
        n = len(src) if limit is None else min(limit, len(src))
        task = _Task(src, conformer)
        for i in range(n):
            task(i)
        return n
    if isinstance(src, TFDataSource):
        it: Iterator[Any] = iter(src.dataset if limit is None else src.dataset.take(limit))
    else:
        it = src.scan()  # a one-shot source is read through its replay buffer: the elements stay
    count = 0
    for index in itertools.count():
        if limit is not None and count >= limit:
            break
        try:
            element = call_user(next, index, it)
        except StopIteration:
            break
        conformer(element, index)
        count += 1
    return count

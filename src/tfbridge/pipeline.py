"""to_dataset and validate: plan first (adapt, peek, spec, executor), then ask the source's kind to build.

The route a source takes (graph-native, gathered in the graph, produced by an executor, read as a stream) is
the source kind's own business (``sources/``); this module decides only what every route shares: the
arguments, the spec after the float policy, the one executor a dataset runs on, batching and prefetching.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tfbridge import _nest, _tf, executors, sources
from tfbridge._checks import (
    MAX_BATCH_HINT,
    MAX_BATCH_SIZE,
    MAX_BATCH_WHY,
    PAD_RAGGED_HINT,
    check_choice,
    check_int,
    check_seed,
    find_stacklevel,
    short,
)
from tfbridge.errors import TfBridgeError, TfBridgeWarning
from tfbridge.executors import Choice, Cost, ExecutorName, ExecutorOptions
from tfbridge.sources import BuildPlan, Peek, Source
from tfbridge.sources.labels import Label
from tfbridge.spec import CastFloats, Inference, Spec, apply_float_policy, format_shape
from tfbridge.validate import Conformer

if TYPE_CHECKING:
    import tensorflow as tf

Validate = Literal["peek", "all", "none"]
_VALIDATE: tuple[Validate, ...] = ("peek", "all", "none")


@dataclass(frozen=True)
class Plan:
    """What to_dataset decided, before building anything (inspect and the CLI print it)."""

    source: Source
    spec: Spec  # the elements as delivered (float policy applied, or the spec given)
    inference: Inference  # the elements as the source gives them, with the shapes seen in the peek
    choice: Choice
    options: ExecutorOptions
    peek: Peek | None  # None for graph-native sources, and when the findings of an earlier peek were reused
    cost: Cost | None = None  # what producing the peeked elements cost (None: graph-native)
    detach: bool = False  # the source returned one buffer again and again: copy each element as it is made

    @property
    def seconds_per_element(self) -> float:
        return self.cost.wall_s / max(self.cost.count, 1) if self.cost else 0.0

    @property
    def bytes_per_element(self) -> float:
        return self.cost.nbytes / max(self.cost.count, 1) if self.cost else 0.0


def plan(
    source: Any,
    *,
    spec: Spec | Any = None,
    peek: int = 8,
    batched: bool | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    cast_floats: CastFloats = "floatx",
    validate: Validate = "peek",
    label: Label | None = None,
) -> Plan:
    """Adapt ``source``, peek at it, settle the delivered spec and choose the executor."""
    check_choice("validate", validate, _VALIDATE)
    check_int("peek", peek)
    options = executors.resolve(executor, workers=workers)
    if isinstance(spec, Spec) and batched is None:
        batched = spec.batched
    found: sources.Found | None
    if spec is None:
        src, found, peeked = sources.examine(source, peek, batched=batched, label=label)
        inference = found.inference
        out_spec = apply_float_policy(inference.spec, cast_floats)
    else:
        src = sources.adapt(source, batched=batched, label=label)
        peeked = src.peek(peek) if src.native_route is None else None
        found = (
            None
            if peeked is None
            else sources.Found(Inference(spec), *peeked.steady(), reused_memory=peeked.reused_memory)
        )
        out_spec = spec if isinstance(spec, Spec) else Spec.from_signature(spec, batched=src.batched)
        if src.native_route is None:
            _refuse_ragged_rank_0(out_spec)
        if out_spec.batched != src.batched:
            msg = (
                f"the spec says batched={out_spec.batched} but the source {src.name} is taken as "
                f"batched={src.batched}.\nHint: pass batched={out_spec.batched} to read the source that way."
            )
            raise TfBridgeError(msg)
        inference = Inference(out_spec)
        if validate != "none" and peeked is not None:
            conform = Conformer(out_spec)
            for index, element in peeked.samples:
                conform(element, index)
    cost = None
    if src.native_route is None and found is not None:
        cost = Cost(
            found.wall_s,
            found.cpu_s,
            found.count,
            found.nbytes,
            sequential=not src.random_access,
            queued_s=found.queued_s,
            length=src.length(),
        )
    choice = _choose(src, options, cost, out_spec, source)
    detach = found is not None and found.reused_memory
    if detach and choice.name == "thread":
        choice = _one_buffer(src, options, choice)
    return Plan(src, out_spec, inference, choice, options, peeked, cost, detach)


def _refuse_ragged_rank_0(spec: Spec) -> None:
    """A RaggedTensorSpec of ragged_rank 0 (TensorFlow's default at rank 1) given for a Python source: no axis of
    it is ragged, so tfbridge could make no ragged value of it (tf.data's own datasets of one may keep theirs)."""
    for path, leaf in spec.fields():
        if leaf.kind == "ragged" and leaf.ragged_rank == 0:
            shape = list(leaf.shape)
            msg = (
                f"the spec's {path} is a RaggedTensorSpec of ragged_rank 0 (TensorFlow's default for rank 1): no "
                "dimension of it is ragged, so it stands for a dense tensor.\nHint: for a field of varying length "
                f"in single examples use tf.TensorSpec({shape}, tf.{leaf.dtype}) (pad_batch pads it); for rows of "
                f"varying length give a rank of 2 or more, e.g. tf.RaggedTensorSpec([None, None], tf.{leaf.dtype}, "
                "ragged_rank=1)."
            )
            raise TfBridgeError(msg)


def _one_buffer(src: Source, options: ExecutorOptions, choice: Choice) -> Choice:
    """Threads for a source that fills one buffer for every element: auto reads it in one thread instead; a
    thread executor asked for is kept, with a warning (the threads would fill the buffer at once)."""
    what = (
        f"{src.name} returns the same buffer (or views of it) for every element, filling it again for the next: "
        "tfbridge copies each element as it is made"
    )
    if options.name == "auto":
        return Choice("serial", 1, f"{what}, and reads it in one thread (threads would fill the buffer at once)")
    msg = (
        f"{what}, but with executor='thread' several threads fill that buffer at once, and elements get each "
        "other's values.\nHint: return a new array for each element (e.g. np.array(self.buffer) or a fresh "
        "np.empty per call), or use executor='serial' or 'process' (each worker process has its own buffer)."
    )
    warnings.warn(msg, TfBridgeWarning, stacklevel=find_stacklevel())
    return choice


def _choose(src: Source, options: ExecutorOptions, cost: Cost | None, spec: Spec, obj: Any = None) -> Choice:
    if src.native_route is not None:
        if options.name not in ("auto", "serial"):
            _unused_executor(src, options, f"{src.native_route}, so there is nothing for it to run")
        else:
            hint = "executor options are for Python sources (generators, iterables, indexed objects)"
            _unused_options(src, options, ("workers", "timeout"), src.native_route, hint)
        return Choice("native", 0, src.native_route)
    if options.name not in ("auto", "serial") and not src.random_access:
        _unused_executor(
            src, options, "a stream can only be read in order, by one reader: it is read in the tf.data thread"
        )
        return Choice("serial", 1, "a stream (generator/iterable) can only be read in order by one reader")
    if not src.random_access:
        why = "a stream can only be read in order, by one reader"
        _unused_options(src, options, ("workers",), why, "workers= is for indexed sources, made in parallel")
    if options.name == "serial" and options.workers not in (None, 1):
        why = "the serial executor makes one element at a time, in tf.data's thread"
        _unused_options(src, options, ("workers",), why, "workers= is for executor='thread' or 'process'")
    if options.name != "auto":
        if options.name in ("process", "ray"):  # say now, not at the first element, when it cannot travel
            task = src.task(None)
            if task is not None:
                executors.processes.dumps_task(task)
        return Choice(options.name, options.workers or 0, "as given")
    assert cost is not None
    choice = executors.choose(cost, lambda: executors.pickled(src.task(Conformer(spec))), source=obj)
    if options.workers is not None and choice.name != "serial":
        choice = Choice(choice.name, options.workers, choice.reason + f" (workers={options.workers} as given)")
    return choice


def _unused_options(src: Source, options: ExecutorOptions, names: tuple[str, ...], why: str, hint: str) -> None:
    """A TfBridgeWarning naming the executor options given that this source's route does not use."""
    given = [f"{name}={getattr(options, name)!r}" for name in names if getattr(options, name) is not None]
    if given:
        warnings.warn(
            f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} not used for {src.name}: {why}.\n"
            f"Hint: leave {'it' if len(given) == 1 else 'them'} out: {hint}.",
            TfBridgeWarning,
            stacklevel=find_stacklevel(),
        )


def _unused_executor(src: Source, options: ExecutorOptions, what: str) -> None:
    warnings.warn(
        f"executor={options.name!r} is not used for {src.name}: {what}.\n"
        "Hint: to produce elements in parallel, give an indexed source (__len__/__getitem__, a map-style dataset), "
        "or parallelise inside tf.data (dataset.map(f, num_parallel_calls=tf.data.AUTOTUNE)).",
        TfBridgeWarning,
        stacklevel=find_stacklevel(),
    )


def make_runner(p: Plan, seed: int | None = None) -> executors.Executor | None:
    """The one executor a dataset of ``p`` runs on (None for graph-native sources)."""
    if p.choice.name == "native":
        return None
    return executors.make(p.choice, p.options, seed, p.bytes_per_element, p.seconds_per_element)


def to_dataset(
    source: Any,
    *,
    spec: Spec | Any = None,
    peek: int = 8,
    batched: bool | None = None,
    label: Label | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    cast_floats: CastFloats = "floatx",
    validate: Validate = "peek",
    batch_size: int | None = None,
    input_context: Any = None,
    timeout: float | None = None,
    ray_address: str | None = None,
    finite: bool = False,
) -> tf.data.Dataset:
    """A prefetched tf.data.Dataset of ``source``'s elements, in order, each exactly once per epoch.

    ``element_spec`` equals the spec after the float policy (or the ``spec`` given), with a leading batch axis
    when ``batch_size`` batches an unbatched source.

    - ``spec``: a ``tb.Spec`` or a nest of ``tf.TypeSpec`` to deliver instead of the inferred one; elements are
      converted to its dtypes (a lossy integer conversion is an error: integers out of an integer dtype's
      range, or that a float dtype cannot hold exactly). ``peek``: elements read to infer the spec.
      ``batched``: overrules the kind's default (see docs/GUIDE.md). ``label``: a column (or list of columns)
      split off as labels.
    - ``executor``: "auto" | "serial" | "thread" | "process" | "ray", or a ``tb.ExecutorOptions``; ``workers``,
      ``timeout`` (seconds per element: a hung element becomes ``ElementTimeoutError``) and ``ray_address``
      are shorthands for its fields.
    - ``shuffle``/``seed``: a new permutation of an indexed source each epoch, reproducible from ``seed``. With
      ``executor="process"`` ``seed`` also seeds ``random`` and ``numpy.random`` before each element from
      ``(seed, epoch, index)``: random augmentation is reproducible whatever the worker count. Serial and thread
      executors leave the global generators to you (threads share them: for reproducible draws the source needs
      a generator per element, e.g. ``np.random.default_rng((seed, index))``); see docs/GUIDE.md section 10.
    - ``cast_floats``: "floatx" (float64 becomes ``keras.config.floatx()``), a float dtype name, or None.
    - ``validate``: "peek" checks every element as it is produced, "all" also scans the source first,
      "none" checks nothing (elements are still converted to the spec's dtypes, e.g. the float cast).
    - ``batch_size``: batches an unbatched source (use ``tb.pad_batch`` for variable lengths).
    - ``input_context``: a ``tf.distribute.InputContext``; this input pipeline gets its own disjoint part.
    - ``finite``: float fields must hold no NaN or Inf; the first element that holds one raises
      ``NonFiniteError`` naming it and the field (a tf.data pipeline: ``InvalidArgumentError``, same text).
    """
    dataset, _ = build(
        source,
        spec=spec,
        peek=peek,
        batched=batched,
        label=label,
        executor=executors.resolve(executor, workers=workers, timeout=timeout, ray_address=ray_address),
        shuffle=shuffle,
        seed=seed,
        cast_floats=cast_floats,
        validate=validate,
        batch_size=batch_size,
        input_context=input_context,
        finite=finite,
    )
    return dataset


def build(
    source: Any,
    *,
    spec: Spec | Any = None,
    peek: int = 8,
    batched: bool | None = None,
    label: Label | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    cast_floats: CastFloats = "floatx",
    validate: Validate = "peek",
    batch_size: int | None = None,
    input_context: Any = None,
    pad_value: Any = None,
    drop_remainder: bool = False,
    finite: bool = False,
    buckets: list[int] | None = None,
) -> tuple[tf.data.Dataset, Spec]:
    """:func:`to_dataset` with the spec it delivers (the tfbridge functions built on it need no second look).

    With ``batch_size`` and ``pad_value``, each batch is padded to its longest example (``pad_batch`` without
    buckets): sources that gather rows in the graph pad there, others through ``padded_batch``. With
    ``buckets`` (boundaries) too, each batch holds examples of one bucket of lengths: Python sources bucket where
    their elements are made (one padded batch per step into tf.data), others through
    ``bucket_by_sequence_length``."""
    tf = _tf.tf()

    check_int("batch_size", batch_size, optional=True, maximum=MAX_BATCH_SIZE, why=MAX_BATCH_WHY, hint=MAX_BATCH_HINT)
    check_seed(seed)
    for flag, value in (("shuffle", shuffle), ("finite", finite)):
        if not isinstance(value, bool):
            msg = f"{flag} must be True or False. Received: {short(value)}"
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
    if buckets is not None and pad_value is None:
        msg = "buckets are for padded batches: pass batch_size and pad_value too (or use tb.pad_batch)."
        raise TfBridgeError(msg)
    if batch_size is not None and pad_value is None:
        _check_batchable(p.spec, p.source)
    padding = None
    if pad_value is not None:
        if batch_size is None:
            msg = "pad_value is for batches: pass batch_size too (or use tb.pad_batch)."
            raise TfBridgeError(msg)
        _check_paddable(p.spec, p.source)
        padding = padding_values(p.spec.signature, pad_value)
    if shuffle and not p.source.random_access:
        msg = (
            f"shuffle=True needs random access, but the source {p.source.name} is a stream "
            "(a generator, iterator or tf.data pipeline) that can only be read in order.\n"
            "Hint: shuffle the result with dataset.shuffle(buffer_size), or pass an indexed source "
            "(a PyDataset/Sequence or an object with __len__ and __getitem__)."
        )
        raise TfBridgeError(msg)
    shard = _shard_of(input_context, shuffle, seed)
    if validate == "all":
        problems = sources.Problems(1, finite)
        p.source.check(p.spec, None, None, problems)
        problems.raise_found()
    runner = make_runner(p, seed)
    # a dataset of unbatched examples of varying shape is one pad_batch may build again (see the end): its
    # workers would wait unused, so they start at its first pass
    rebuildable = batch_size is None and not p.spec.batched and any(None in leaf.shape for _, leaf in p.spec.fields())
    try:
        built = p.source.build(
            BuildPlan(
                spec=p.spec,
                conform=validate != "none",
                finite=finite,
                runner=runner,
                shuffle=shuffle,
                seed=seed,
                shard=shard,
                batch_size=batch_size,
                drop_remainder=drop_remainder,
                padding=padding,
                buckets=buckets,
                timeout=p.options.timeout,
                seconds_per_element=p.seconds_per_element,
                bytes_per_element=p.bytes_per_element,
                warm=not rebuildable,
                detach=p.detach,
            )
        )
    except BaseException:
        if runner is not None:
            runner.close()
        raise
    ds = built.dataset
    out_spec = p.spec
    if batch_size is not None:
        from tfbridge.spec import add_batch_axis

        out_spec = add_batch_axis(p.spec)
        if buckets is not None and not built.batched_by_source:
            from tfbridge.batching import _call, _default_length

            ds = ds.bucket_by_sequence_length(
                _call(_default_length(p.spec.signature)),
                buckets,
                [batch_size] * (len(buckets) + 1),
                padding_values=padding,
                drop_remainder=drop_remainder,
            )
        elif padding is not None and not built.batched_by_source:
            ds = ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder)
        elif not built.batched_by_source:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    result = _tf.tag_batched(ends_promptly(ds.prefetch(tf.data.AUTOTUNE)), out_spec.batched)
    if rebuildable:
        # pad_batch(result, n) may build it again, padded per batch where its rows are gathered. Kept only when a
        # field varies (nothing to pad otherwise): the rebuild holds the source (e.g. the user's arrays) alive
        again = dict(spec=spec, peek=peek, batched=batched, label=label, executor=executor, workers=workers,
                     shuffle=shuffle, seed=seed, cast_floats=cast_floats, validate=validate,
                     input_context=input_context, finite=finite)  # fmt: skip
        _tf.tag_rebuild(result, functools.partial(build, source, **again))
    from tfbridge.sources._positions import passes_in

    for passes in passes_in(result):  # TensorFlow keeps their Python side alive: the passes end with the dataset
        weakref.finalize(result, passes.close)
    if runner is not None:
        # workers live as long as the dataset (its iterators keep it alive); TensorFlow itself keeps the
        # generator callable forever, so the dataset object is what tells us it is gone
        weakref.finalize(result, runner.close)
    return result, out_spec


def ends_promptly(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuning model turned off, unless its pipeline's options say otherwise.

    With autotuning on (TensorFlow's default), a pass iterated inside a ``tf.function`` (``for batch in
    dataset`` in a custom training loop) ends only when the model's optimisation thread next wakes, which it
    does at 10 ms x (2**k - 1) after the pass began (0.31, 0.63, 1.27, 2.55, 5.11 s, ...): a pass whose last
    element came at 3.3 s ended at 5.1 s. Without the model the pass ends as its last element is taken.
    ``prefetch(AUTOTUNE)`` then sizes its buffer itself (growing it while the consumer finds it empty) and a
    ``map(num_parallel_calls=AUTOTUNE)`` runs one call per core. A pipeline that sets
    ``options.autotune.enabled`` keeps its setting.
    """
    import tensorflow as tf

    if dataset.options().autotune.enabled is not None:
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


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


def _check_paddable(spec: Spec, src: Source) -> None:
    if spec.batched:
        msg = (
            f"pad_batch needs a source of single examples, but {src.name} is taken as batched.\n"
            "Hint: pass batched=False if each element is one example."
        )
        raise TfBridgeError(msg)
    for path, leaf in spec.fields():
        if leaf.kind != "dense":
            name = "RaggedTensorSpec" if leaf.kind == "ragged" else "SparseTensorSpec"
            msg = f"pad_batch pads dense tensors; this dataset's {path} is a {name}.\nHint: {PAD_RAGGED_HINT}"
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


def padding_values(spec: Any, pad_value: Any) -> Any:
    """Padding constants for each field of ``spec`` (a signature nest of single examples): ``pad_value`` for
    every field, or a nest like the elements; 0 pads strings with b"" and booleans with False. One ``pad_value``
    for every field that does not fit the dtype of a field of fixed shape (never padded: a label) pads it with
    its zero instead."""
    import tensorflow as tf

    norm = _nest.normalize(spec)
    leaves, treespec = _nest.flatten(norm)
    per_field = isinstance(pad_value, (tuple, list, dict))
    if per_field:
        given, given_tree = _nest.flatten(_nest.normalize(pad_value))
        if given_tree != treespec:
            msg = (
                f"pad_value must be a scalar or have the structure of the elements, e.g. "
                f"{_zeros_like(leaves, treespec)}. Received: {short(pad_value)}"
            )
            raise TfBridgeError(msg)
    else:
        given = [pad_value] * len(leaves)
    out = []
    for leaf, value in zip(leaves, given, strict=False):
        try:
            out.append(tf.constant(_pad_for(leaf, value), dtype=leaf.dtype))
        except (TypeError, ValueError) as exc:
            if not per_field and leaf.shape.is_fully_defined():
                out.append(tf.constant(_pad_for(leaf, 0), dtype=leaf.dtype))
                continue
            msg = (
                f"pad_value {short(value)} does not fit a field of dtype {leaf.dtype.name}: {exc}\n"
                f"Hint: give pad_value per field, in the structure of the elements, e.g. "
                f"pad_value={_zeros_like(leaves, treespec)}."
            )
            raise TfBridgeError(msg) from None
    return _nest.unflatten(treespec, out)


def _pad_for(leaf: Any, value: Any) -> Any:
    import tensorflow as tf

    if leaf.dtype == tf.string:
        return b"" if isinstance(value, int) and value == 0 else value
    if leaf.dtype == tf.bool and isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return value


def _zeros_like(leaves: list[Any], treespec: Any) -> str:
    """The elements' structure with each field's default padding, for hints: ({'tokens': 0, 'text': b''}, 0)."""
    zeros = [_pad_for(leaf, 0) if leaf.dtype.is_integer or leaf.dtype.name in ("string", "bool") else 0.0
             for leaf in leaves]  # fmt: skip
    return short(_nest.unflatten(treespec, zeros), 200)


def validate_source(
    source: Any,
    spec: Spec | Any = None,
    *,
    limit: int | None = None,
    batched: bool | None = None,
    label: Label | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    finite: bool = False,
    max_problems: int = 20,
) -> int:
    """Check the first ``limit`` elements (None: all) against ``spec`` (None: inferred); return how many.

    Every element is checked: the elements that do not fit are collected (up to ``max_problems``, then the
    check stops) and raised as one SpecMismatchError listing each element and field; its ``problems`` holds one
    error per element. ``finite``: float fields must also hold no NaN or Inf (``NonFiniteError``).
    ``executor`` and ``workers`` say who produces the elements of a Python source (as for ``to_dataset``).
    """
    check_int("limit", limit, minimum=0, optional=True)
    check_int("max_problems", max_problems, minimum=1)
    if not isinstance(finite, bool):
        msg = f"finite must be True or False. Received: {short(finite)}"
        raise TfBridgeError(msg)
    p = plan(source, spec=spec, batched=batched, label=label, executor=executor, workers=workers,
             cast_floats=None, validate="none")  # fmt: skip
    runner = make_runner(p)
    problems = sources.Problems(max_problems, finite)
    try:
        count = p.source.check(p.spec, limit, runner, problems)
    finally:
        if runner is not None:
            runner.close()
    problems.raise_found()
    return count


__all__: Sequence[str] = ["Plan", "build", "ends_promptly", "make_runner", "plan", "to_dataset", "validate_source"]

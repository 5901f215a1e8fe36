"""pad_batch and bucket_boundaries: batches of variable-length examples with little padding."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge import _nest, _tf
from tfbridge._checks import MAX_BATCH_HINT, MAX_BATCH_SIZE, MAX_BATCH_WHY, PAD_RAGGED_HINT, check_int, short
from tfbridge.errors import TfBridgeError
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label

if TYPE_CHECKING:
    import tensorflow as tf


def bucket_boundaries(lengths: Sequence[int] | np.ndarray, num_buckets: int) -> list[int]:
    """``num_buckets - 1`` increasing boundaries (bucket i holds lengths < boundaries[i], tf.data's
    convention) that minimise the total padded size when each element is padded to its bucket's longest.

    Exact, not quantiles: dynamic programming over the distinct lengths, each layer solved in linear time with
    a monotone convex-hull of lines (the cost of a bucket is linear in its longest length), in integers.
    """
    check_int("num_buckets", num_buckets)
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 0).any():
        msg = f"lengths must be a non-empty 1-D sequence of non-negative ints. Received: {short(lengths)}"
        raise TfBridgeError(msg)
    values_np, counts = np.unique(arr, return_counts=True)
    values = [int(v) for v in values_np]
    prefix = [0, *np.cumsum(counts).tolist()]  # prefix[i]: elements with length < values[i]
    m = len(values)
    groups = min(num_buckets, m)
    # best[b]: least padded size of values[0..b] in the buckets so far; starts[j][b]: first value of the last bucket
    best = [values[b] * prefix[b + 1] for b in range(m)]
    starts: list[list[int]] = [[0] * m]
    for j in range(1, groups):
        cur, start_of = [0] * m, [0] * m
        # the last bucket is values[a..b]: best_prev[a-1] + values[b] * (prefix[b+1] - prefix[a]); as lines in
        # x = values[b]: slope -prefix[a], intercept best_prev[a-1]; slopes fall and queries rise with b
        hull: list[tuple[int, int, int]] = []  # (slope, intercept, a)
        ptr = 0
        for b in range(j, m):
            line = (-prefix[b], best[b - 1], b)
            while len(hull) >= 2 and _useless(hull[-2], hull[-1], line):
                hull.pop()
            hull.append(line)
            ptr = min(ptr, len(hull) - 1)
            x = values[b]
            while ptr + 1 < len(hull) and _at(hull[ptr + 1], x) <= _at(hull[ptr], x):
                ptr += 1
            cur[b] = _at(hull[ptr], x) + x * prefix[b + 1]
            start_of[b] = hull[ptr][2]
        best = cur
        starts.append(start_of)
    ends, b = [], m - 1
    for j in range(groups - 1, 0, -1):
        a = starts[j][b]
        ends.append(a - 1)
        b = a - 1
    bounds = [values[e] + 1 for e in sorted(ends)]
    top = values[-1] + 1
    while len(bounds) < num_buckets - 1:  # fewer distinct lengths than buckets: empty buckets on top
        top += 1
        bounds.append(top)
    return bounds


def _at(line: tuple[int, int, int], x: int) -> int:
    return line[0] * x + line[1]


def _useless(l1: tuple[int, int, int], l2: tuple[int, int, int], l3: tuple[int, int, int]) -> bool:
    """l2 is never below both l1 and l3 (slopes strictly falling l1 > l2 > l3)."""
    return (l3[1] - l1[1]) * (l1[0] - l2[0]) <= (l2[1] - l1[1]) * (l1[0] - l3[0])


def pad_batch(
    dataset_or_source: Any,
    batch_size: int,
    *,
    buckets: int | Sequence[int] | None = None,
    pad_value: Any = 0,
    drop_remainder: bool = False,
    length_fn: Callable[[Any], Any] | None = None,
    ragged: bool = False,
    label: Label | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    verbose: bool | None = None,
) -> tf.data.Dataset:
    """Batches of ``batch_size`` examples, each padded to its batch's longest (strings pad with b"").

    ``buckets``: None (plain padding), an int (that many buckets, boundaries from :func:`bucket_boundaries`
    over one pass of lengths, with a progress bar when ``verbose``; None: when stderr is a terminal), or a list
    of boundaries; each batch then holds at most ``batch_size`` examples of one bucket. The length of an
    element is the first variable dimension of its first variable-length field unless ``length_fn`` says
    otherwise: it gets the whole element as symbolic tensors and returns a scalar (e.g. ``tf.shape(x)[0]``).
    ``ragged=True`` gives ragged batches (no padding at all) instead. ``label``, ``executor`` and
    ``workers`` are those of ``to_dataset`` (for a source that is not yet a tf.data dataset).
    """
    import tensorflow as tf

    from tfbridge import sources
    from tfbridge.pipeline import build
    from tfbridge.sources.tfdata import has_flat_ragged

    check_int("batch_size", batch_size, maximum=MAX_BATCH_SIZE, why=MAX_BATCH_WHY, hint=MAX_BATCH_HINT)
    if isinstance(buckets, bool):
        msg = f"buckets must be None, a number of buckets or a list of boundaries. Received: buckets={buckets}"
        raise TfBridgeError(msg)
    if buckets is not None and not isinstance(buckets, int):
        _checked_boundaries(buckets)  # before the source is read
    rebuild = _tf.rebuild_of(dataset_or_source)
    # what builds the padded (or bucketed) batches where the source makes its elements: a dataset to_dataset made
    # (not yet batched) built again, or a source built for the first time; None: tf.data batches a dataset
    given_dataset = isinstance(dataset_or_source, tf.data.Dataset) and label is None
    builder = None
    flat_ragged = isinstance(dataset_or_source, tf.data.Dataset) and has_flat_ragged(dataset_or_source.element_spec)
    if not ragged and not flat_ragged and (buckets is None or length_fn is None):
        if rebuild is not None and label is None:
            builder = rebuild
        elif not given_dataset:
            builder = functools.partial(
                build, dataset_or_source, batched=False, label=label, executor=executor, workers=workers
            )
    if builder is not None and not isinstance(buckets, int):
        batches_built, _ = builder(
            batch_size=batch_size, pad_value=pad_value, drop_remainder=drop_remainder,
            buckets=None if buckets is None else _checked_boundaries(buckets),
        )  # fmt: skip
        return batches_built
    if given_dataset:
        ds = dataset_or_source
        if sources.ends_in_batching(ds):
            msg = (
                "pad_batch needs a dataset of single examples, but this one is already batched.\n"
                "Hint: pass the dataset before .batch(), or .unbatch() it first."
            )
            raise TfBridgeError(msg)
    else:
        if (
            isinstance(buckets, int)
            and not isinstance(buckets, bool)
            and sources.adapt(dataset_or_source, batched=False).one_shot
        ):
            msg = (
                "pad_batch with buckets=<int> reads every length first, which would use up a one-shot iterator.\n"
                "Hint: pass a generator function or a re-iterable, or explicit boundaries (buckets=[...])."
            )
            raise TfBridgeError(msg)
        ds, _ = build(dataset_or_source, batched=False, label=label, executor=executor, workers=workers)
    if not ragged and has_flat_ragged(ds.element_spec):  # each a tensor of its own length: padded as one
        as_tuple = isinstance(ds.element_spec, tuple)  # tf.data passes a tuple's parts (even one) as arguments
        ds = ds.map(lambda *e: e if as_tuple else e[0], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    spec = ds.element_spec
    paths, leaves, _ = _nest.flatten_with_paths(_nest.normalize(spec))
    for where, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, tf.TensorSpec) and not ragged:
            msg = (
                f"pad_batch pads dense tensors; this dataset's {_nest.format_path(where, spec)} is a "
                f"{type(leaf).__name__}.\nHint: {PAD_RAGGED_HINT}"
            )
            raise TfBridgeError(msg)
    from tfbridge.pipeline import ends_promptly, padding_values

    padding = None if ragged else padding_values(spec, pad_value)
    if buckets is None:
        if ragged:
            return ends_promptly(ds.ragged_batch(batch_size, drop_remainder=drop_remainder))
        return ends_promptly(ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder))
    length = _traced_length_fn(ds, length_fn) if length_fn is not None else _default_length(spec)
    if isinstance(buckets, int):
        if buckets < 1:
            msg = f"buckets must be at least 1. Received: buckets={buckets}"
            raise TfBridgeError(msg)
        lengths = _all_lengths(ds.map(_call(length)), verbose)
        if lengths.size == 0:
            msg = "pad_batch: the source is empty; there are no lengths to choose buckets from."
            raise TfBridgeError(msg)
        boundaries = bucket_boundaries(lengths, buckets)
        batches = _batch_count(lengths, boundaries, batch_size, drop_remainder)
        if builder is not None:  # bucketed where the elements are made, with the boundaries just found
            bucketed, _ = builder(
                batch_size=batch_size, pad_value=pad_value, drop_remainder=drop_remainder, buckets=boundaries
            )
            return ends_promptly(bucketed.apply(tf.data.experimental.assert_cardinality(batches)))
    else:
        boundaries = _checked_boundaries(buckets)
        batches = None  # known only after a pass over the lengths
    if ragged:
        edges = tf.constant(boundaries, tf.int32)

        def bucket_of(*element: Any) -> Any:
            n = _call(length)(*element)
            return tf.reduce_sum(tf.cast(n >= edges, tf.int64))

        out = ds.group_by_window(
            bucket_of,
            lambda _, window: window.ragged_batch(batch_size, drop_remainder=drop_remainder),
            window_size=batch_size,
        )
    else:
        out = ds.bucket_by_sequence_length(
            _call(length),
            boundaries,
            [batch_size] * (len(boundaries) + 1),
            padding_values=padding,
            drop_remainder=drop_remainder,
        )
        if drop_remainder:  # every batch whole: the batch axis says so, as on the other routes
            out = out.map(functools.partial(_whole_batches, batch_size, isinstance(out.element_spec, tuple)))
    if batches is not None:  # Keras then knows the steps per epoch (no "ran out of data" in the first epoch)
        out = out.apply(tf.data.experimental.assert_cardinality(batches))
    return ends_promptly(out)


def _whole_batches(batch_size: int, as_tuple: bool, *batch: Any) -> Any:
    """A batch whose batch axis is ``batch_size`` in its static shape (bucket_by_sequence_length leaves it None).
    ``as_tuple``: the batch is a tuple, whose parts (even one) tf.data passes as arguments."""
    import tensorflow as tf

    whole = batch if as_tuple else batch[0]
    return tf.nest.map_structure(lambda t: tf.ensure_shape(t, [batch_size, *t.shape[1:]]), whole)


def _checked_boundaries(buckets: Any) -> list[int]:
    try:
        boundaries = [int(b) for b in buckets]
    except (TypeError, ValueError):
        boundaries = []
    if (
        not boundaries
        or any(b <= a for a, b in itertools.pairwise(boundaries))
        or boundaries[0] < 1
        or boundaries[-1] >= 2**31
    ):
        msg = (
            "buckets must be an int or a non-empty list of increasing positive boundaries below 2**31 "
            f"(lengths are int32 in the graph). Received: {short(buckets)}"
        )
        raise TfBridgeError(msg)
    return boundaries


def _batch_count(lengths: np.ndarray, boundaries: list[int], batch_size: int, drop_remainder: bool) -> int:
    """Batches per epoch when each bucket (lengths below boundaries[i], tf.data's rule) is cut into batches."""
    per_bucket = np.bincount(np.searchsorted(boundaries, lengths, side="right"), minlength=len(boundaries) + 1)
    full = per_bucket // batch_size
    return int(full.sum() if drop_remainder else (full + (per_bucket % batch_size > 0)).sum())


def _all_lengths(lengths_ds: Any, verbose: bool | None) -> np.ndarray:
    """One pass over the lengths, with a progress bar for long passes."""
    from tfbridge._progress import progress_bar
    from tfbridge.sources._base import as_raised

    bar = progress_bar(verbose, int(lengths_ds.cardinality()), "example")
    out: list[np.ndarray] = []
    seen = 0
    with as_raised():  # a source's error is raised as it is (SourceError), not in TensorFlow's op error
        for chunk in lengths_ds.batch(4096).as_numpy_iterator():
            out.append(chunk)
            seen += len(chunk)
            if bar is not None:
                bar.update(seen)
    return np.concatenate(out) if out else np.zeros((0,), np.int32)


def _call(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    """tf.data passes tuple elements as separate arguments; length functions take the whole element."""

    import tensorflow as tf

    plain = tf.autograph.experimental.do_not_convert(fn)  # as bucket_by_sequence_length calls it: the same

    def whole(*element: Any) -> Any:
        return tf.cast(plain(element[0] if len(element) == 1 else element), tf.int32)

    return whole


def _traced_length_fn(ds: Any, length_fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``length_fn``, once tf.data has traced it on the dataset's elements: an error while tracing, or a result
    that is not one number per element, says what went wrong here instead of in TensorFlow's words."""
    hint = (
        "Hint: length_fn gets the whole element (e.g. (features, label)) as symbolic tensors inside tf.data; "
        "return a scalar such as tf.shape(x)[0], not len(x) or x.shape[0] (unknown while tracing)."
    )
    try:
        lengths = ds.map(_call(length_fn))
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        said = lines[-1] if lines else ""  # the error itself, not the frames autograph puts before it
        if not said.startswith(type(exc).__name__):
            said = f"{type(exc).__name__}: {said}"
        msg = f"length_fn failed while tf.data traced it: {said[:300]}\n{hint}"
        raise TfBridgeError(msg) from exc
    if lengths.element_spec.shape.rank != 0:
        msg = (
            f"length_fn must return one length per element (a scalar), but it returned shape "
            f"{lengths.element_spec.shape}.\n{hint}"
        )
        raise TfBridgeError(msg)
    return length_fn


def length_axis(spec: Any) -> tuple[int, int]:
    """(leaf, axis) whose size is an element's length: the first variable dimension of the first variable-length
    field of ``spec`` (a signature nest)."""
    leaves = _nest.flatten(_nest.normalize(spec))[0]
    for k, leaf in enumerate(leaves):
        dims = leaf.shape.as_list() if leaf.shape.rank is not None else []
        for d, n in enumerate(dims):
            if n is None:
                return k, d
    msg = (
        "pad_batch with buckets needs a field whose length varies, but every field has a fixed shape.\n"
        "Hint: pass length_fn= to say how long an element is, or drop buckets=."
    )
    raise TfBridgeError(msg)


def _default_length(spec: Any) -> Callable[[Any], Any]:
    import tensorflow as tf

    k, d = length_axis(spec)

    def length(element: Any) -> Any:
        return tf.shape(_nest.flatten(_nest.normalize(element))[0][k], out_type=tf.int32)[d]

    return length

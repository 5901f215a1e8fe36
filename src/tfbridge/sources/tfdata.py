"""tf.data datasets. The spec is the dataset's own ``element_spec``. Whether an element is a batch is read from
the pipeline: batched when it ends in a batching step (batch, padded_batch, ragged_batch, rebatch,
bucket_by_sequence_length), examples when it ends in a source of single examples (from_tensor_slices, range,
TFRecord, text lines, unbatch), looking through every step that keeps elements whole (map, cache, prefetch,
shuffle, repeat, take, skip, filter, options, ...). Where the steps cannot tell (from_generator, interleave,
flat_map, from_tensors), a scalar field means examples, fields sharing a leading size that varies between
elements (a short last batch) mean batches, and anything else is taken as examples with a warning. Datasets of
datasets (``window()``) are refused. Elements stay in the graph: casts and shape fixes are a ``map``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tfbridge import _nest, _tf
from tfbridge._checks import short
from tfbridge.errors import SpecInferenceError, SpecMismatchError, TfBridgeError
from tfbridge.sources._base import (
    _DECIDE_PEEK,
    BuildPlan,
    Built,
    Peek,
    Problems,
    Runner,
    Task,
    call_user,
    check_elements,
    decide_batched,
    timed,
)
from tfbridge.sources.labels import split_label

if TYPE_CHECKING:
    from tfbridge.spec import Inference, Spec

_MAX_HOPS = 1000


def is_tf_dataset(obj: Any) -> bool:
    if not type(obj).__module__.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(obj, tf.data.Dataset)


def pipeline_batched(dataset: Any) -> bool | None:
    """Whether the pipeline's elements are batches, read from its steps (see the module docstring); None when
    the steps cannot tell (from_generator, interleave, flat_map, from_tensors, ...)."""
    node, hops = dataset, 0
    while node is not None and hops < _MAX_HOPS:
        known = _tf.tagged_batched(node)
        if known is not None:
            return known
        kind = _tf.dataset_kind(node)
        if kind in _tf.BATCHING_DATASETS:
            return True
        if kind in _tf.EXAMPLE_SOURCE_DATASETS:
            return False
        # batched when every part is (zip, concatenate; sample_from_datasets and choose_from_datasets mix them)
        if kind in ("_ZipDataset", "_ConcatenateDataset", "_DirectedInterleaveDataset"):
            parts = [pipeline_batched(d) for d in _tf.dataset_inputs(node)]
            if parts and all(p is True for p in parts):
                return True
            return False if parts and all(p is not None for p in parts) else None
        if not _tf.keeps_elements(node):
            return None
        inputs = _tf.dataset_inputs(node)
        node, hops = (inputs[0] if inputs else None), hops + 1
    return None


def ends_in_batching(dataset: Any) -> bool:
    """Whether the pipeline's steps say its elements are batches (False also when they cannot tell)."""
    return pipeline_batched(dataset) is True


class TFDataSource:
    """A tf.data.Dataset: its element_spec is the truth; elements never pass through Python."""

    native_route = "a tf.data dataset runs in TensorFlow's own threads; no Python per element"
    random_access = False
    one_shot = False

    def __init__(self, dataset: Any, batched: bool | None) -> None:
        self.obj = self.dataset = dataset
        _refuse_nested(dataset)
        self._batched = pipeline_batched(dataset) if batched is None else batched

    @property
    def batched(self) -> bool:
        """As given, else from the pipeline's steps, else from the element spec and the elements (a scalar field:
        examples; otherwise as ``decide_batched`` says, with a warning when it is a guess)."""
        if self._batched is None:
            leaves = _nest.flatten(_nest.normalize(self.dataset.element_spec))[0]
            if any(leaf.shape.rank == 0 for leaf in leaves):
                self._batched = False
            else:
                self._batched = decide_batched(
                    self.peek(_DECIDE_PEEK).samples,
                    self.name,
                    default=False,
                    why="its steps do not say; a tf.data pipeline's elements are examples unless it batches",
                )
        return self._batched

    @property
    def name(self) -> str:
        return f"tf.data.Dataset ({type(self.dataset).__name__.strip('_')})"

    def length(self) -> int | None:
        n = int(self.dataset.cardinality())
        return n if n >= 0 else None

    @property
    def infinite(self) -> bool:
        import tensorflow as tf

        return bool(int(self.dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY))

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task | None:
        return None

    def peek(self, n: int) -> Peek:
        it = iter(self.dataset.take(n))
        return timed(lambda i: call_user(next, i, it), range(n))

    def infer(self, n: int, peek: Peek | None) -> Inference:
        from tfbridge.spec import Inference, Leaf, Spec, infer

        if self.length() == 0:  # known without reading it (range(0), slices of an empty array, take(0)...)
            msg = (
                f"the source {self.name} is empty: its cardinality is 0, so there is no element to train on or to "
                "infer a spec from.\nHint: check the pipeline's input and its take, skip or shard steps."
            )
            raise SpecInferenceError(msg)
        try:
            static = Spec.from_signature(self.dataset.element_spec, batched=self.batched)
        except TfBridgeError:
            # some field has unknown rank (e.g. after py_function): read it off sample elements
            samples = (peek or self.peek(n)).samples
            if not samples:
                msg = (
                    f"the source {self.name} is empty: the dataset gave no element, so there is no element to "
                    "infer a spec from.\nHint: check the pipeline's input, and its filter, take, skip or shard steps."
                )
                raise SpecInferenceError(msg) from None
            return infer(samples, self.batched)
        if not self.batched:
            return Inference(static)
        for path, leaf in static.fields():
            if leaf.rank == 0:
                msg = (
                    f"the dataset is batched but {path} is a scalar ({leaf.describe()}).\n"
                    "Hint: pass batched=False if each element is a single example."
                )
                raise SpecInferenceError(msg, path=path)
        structure = _nest.map_structure(
            lambda lf: Leaf((None, *lf.shape[1:]), lf.dtype, lf.kind, lf.ragged_rank), static.structure
        )
        return Inference(Spec(structure, True))

    def with_label(self, label: Any) -> TFDataSource:
        out_spec = split_label(self.dataset.element_spec, label)  # a refusal here, not in autograph's frames
        labelled = _map(self.dataset, lambda *e: split_label(e[0] if len(e) == 1 else e, label), out_spec)
        return TFDataSource(labelled, self.batched)

    def build(self, plan: BuildPlan) -> Built:
        ds = _fit_to_spec(self.dataset, plan.spec)
        if plan.finite:
            ds = _assert_finite(ds, plan.spec)
        if plan.shard is not None:
            ds = ds.shard(*plan.shard)
        return Built(ds)

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        if limit is None and self.infinite:  # every element of it: the read would never end
            msg = (
                f"the dataset {self.name} is infinite (it repeats): reading every element of it would never end.\n"
                "Hint: pass the pipeline before its .repeat(), take a finite part with .take(n), or give limit=n "
                "where the call takes one (validate)."
            )
            raise TfBridgeError(msg)
        return iter(self.dataset if limit is None else self.dataset.take(limit))

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        return check_elements(self.scan(runner, limit), spec, limit, problems)

    def parts(self, n: int) -> list[TFDataSource]:
        return [self]


def _assert_finite(ds: Any, spec: Spec) -> Any:
    """The pipeline with a graph check that float fields hold no NaN or Inf (InvalidArgumentError naming the
    element's position in the pipeline and the field)."""
    import tensorflow as tf

    from tfbridge.validate import FLOAT_DTYPES as _FLOATS

    fields = list(spec.fields())
    if not any(leaf.dtype in _FLOATS for _, leaf in fields):
        return ds

    def check(position: Any, element: Any) -> Any:
        for value, (path, leaf) in zip(tf.nest.flatten(element), fields, strict=True):
            if leaf.dtype not in _FLOATS:
                continue
            values = getattr(value, "flat_values", getattr(value, "values", value))
            parts = [tf.math.real(values), tf.math.imag(values)] if leaf.dtype.startswith("complex") else [values]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(p)) for p in parts])
            tf.debugging.Assert(
                finite,
                ["tfbridge: element", position, f"of the pipeline at {path} holds NaN or Inf, but finite=True asks "
                 "for finite values. Hint: fix them in the pipeline (tf.where(tf.math.is_finite(x), x, 0.0)) or "
                 "drop such elements (dataset.filter)."],
            )  # fmt: skip
        return element

    return _map(ds.enumerate(), check, ds.element_spec)


def _map(ds: Any, fn: Any, out_spec: Any) -> Any:
    """``ds.map(fn)`` (elements in order), whose elements are nests like ``out_spec`` (of TypeSpecs). A field of a
    ragged spec of ragged_rank 0 (each element of ``from_tensor_slices(ragged)``) reaches a map as a dense tensor,
    and a map's dense result makes it dense: batched later, it would no longer be ragged. Where the dataset has such
    fields, ``fn`` runs on batches of one instead, whose ragged fields stay ragged when unbatched again."""
    import tensorflow as tf

    if not has_flat_ragged(ds.element_spec):
        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ragged_out = [_flat_ragged(s) for s in tf.nest.flatten(out_spec)]

    def first(v: Any) -> Any:
        if isinstance(v, tf.SparseTensor):  # no indexing: the batch of one reshaped away, static shape kept
            one = tf.sparse.reshape(v, v.dense_shape[1:])
            one.set_shape(v.shape[1:])
            return one
        return v[0]

    def lead(v: Any, ragged: bool) -> Any:
        if isinstance(v, tf.SparseTensor):
            led = tf.sparse.expand_dims(v, 0)
            led.set_shape([1, *v.shape])
            return led
        return tf.RaggedTensor.from_tensor(v[None]) if ragged else v[None]

    def one(*batch: Any) -> Any:
        out = fn(*tf.nest.map_structure(first, batch, expand_composites=False))
        leaves = tf.nest.flatten(out)
        again = [lead(v, r) for v, r in zip(leaves, ragged_out, strict=True)]
        return tf.nest.pack_sequence_as(out, again)

    return ds.batch(1).map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def _refuse_nested(dataset: Any) -> None:
    import tensorflow as tf

    for leaf in _nest.flatten(_nest.normalize(dataset.element_spec))[0]:
        if isinstance(leaf, tf.data.DatasetSpec):
            msg = (
                "the elements of this dataset are datasets themselves (as window() and group_by_window() without "
                "a reduce make them): tensors are needed to train on.\n"
                "Hint: turn each window into a tensor first, e.g. ds.window(n).flat_map(lambda w: w.batch(n)), or "
                f"use ds.batch(n). Received: element_spec={short(dataset.element_spec)}"
            )
            raise TfBridgeError(msg)


def _fit_to_spec(ds: Any, spec: Spec) -> Any:
    """``ds`` with every field cast and shaped as ``spec`` says, in the graph; refuses what does not fit."""
    import tensorflow as tf

    want = spec.signature
    if ds.element_spec == want:
        return ds
    have_leaves, _ = _nest.flatten(_nest.normalize(ds.element_spec))
    want_leaves, want_tree = _nest.flatten(want)
    if len(have_leaves) != len(want_leaves):
        msg = f"the dataset's elements do not have the spec's structure.\nExpected: {want}\nReceived: {ds.element_spec}"
        raise TfBridgeError(msg[:2000])
    paths = [p for p, _ in spec.fields()]
    for path, have, wanted in zip(paths, have_leaves, want_leaves, strict=False):
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

    def fits(value: Any, wanted: Any, path: str) -> Any:
        """``value`` shaped as ``wanted`` says, after a check whose failure names the field, the shape expected
        and the one it has (an assertion in the graph: no Python, so the dataset can still be distributed; no
        element count either, which would make the pipeline one that tf.data cannot shard by its files)."""
        rank = wanted.shape.rank
        fixed = [(k, n) for k, n in enumerate(wanted.shape.as_list()) if n is not None]
        actual = tf.shape(value)

        def dims_fit() -> Any:
            return tf.reduce_all([tf.equal(actual[k], n) for k, n in fixed]) if fixed else tf.constant(True)

        ok = tf.cond(tf.equal(tf.size(actual), rank), dims_fit, lambda: tf.constant(False))
        text = tuple(wanted.shape.as_list())
        check = tf.debugging.Assert(
            ok, [f"SpecMismatchError: an element at {path}: expected shape {text}, got shape", actual], summarize=16
        )
        with tf.control_dependencies([check]):
            return tf.ensure_shape(_tf.loosen_shape(tf.identity(value), rank), wanted.shape)

    def exact(value: Any, dtype: Any, path: str) -> Any:
        """``value`` (integers) after a check that ``dtype`` (a float) holds each of them unchanged."""
        cast = tf.cast(value, dtype)
        back = tf.cast(cast, value.dtype)
        changed = tf.logical_or(tf.not_equal(back, value), tf.logical_not(tf.math.is_finite(cast)))
        first = tf.boolean_mask(tf.reshape(value, [-1]), tf.reshape(changed, [-1]))[:1]
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(changed)),
            [f"SpecMismatchError: an element at {path}: {value.dtype.name} values that {dtype.name} cannot hold "
             "exactly (give the spec a float dtype that holds them, or an integer dtype), e.g.", first],
        )
        with tf.control_dependencies([check]):
            return tf.identity(value)

    def fix(*element: Any) -> Any:
        whole = element[0] if len(element) == 1 else element
        leaves, _ = _nest.flatten(_nest.normalize(whole))
        out = []
        for value, wanted, path in zip(leaves, want_leaves, paths, strict=False):
            if isinstance(wanted, tf.TensorSpec):
                if value.dtype != wanted.dtype:
                    value = exact(value, wanted.dtype, path) if _inexact(value.dtype, wanted.dtype) else value
                    value = tf.cast(value, wanted.dtype)
                if value.shape != wanted.shape:  # checked, and static dims the spec leaves open loosened (batch axis)
                    value = fits(value, wanted, path)
            elif value.dtype != wanted.dtype:
                checked = _inexact(value.dtype, wanted.dtype)
                if isinstance(value, tf.SparseTensor):
                    values = exact(value.values, wanted.dtype, path) if checked else value.values
                    cast = tf.SparseTensor(value.indices, tf.cast(values, wanted.dtype), value.dense_shape)
                    cast.set_shape(value.shape)
                    value = cast
                elif isinstance(value, tf.RaggedTensor):
                    flat = exact(value.flat_values, wanted.dtype, path) if checked else value.flat_values
                    value = value.with_flat_values(tf.cast(flat, wanted.dtype))
                else:  # dense: a ragged spec of ragged_rank 0 (a slice of a ragged tensor) maps as one
                    value = tf.cast(exact(value, wanted.dtype, path) if checked else value, wanted.dtype)
            out.append(value)
        return _nest.unflatten(want_tree, out)

    return _map(ds, fix, want)


def _lossy(have: Any, want: Any) -> bool:
    """A graph cast from ``have`` to ``want`` that can change values (float to int, narrower ints, to bool)."""
    if have == want:
        return False
    if want.is_bool:
        return True
    if want.is_integer:
        if not have.is_integer:
            return not have.is_bool
        return bool(
            have.size > want.size
            or (have.is_unsigned != want.is_unsigned and have.size >= want.size)
            or (not have.is_unsigned and want.is_unsigned)
        )
    return bool(have == "string" or want == "string")


def has_flat_ragged(element_spec: Any) -> bool:
    """Whether a field is ragged of ragged_rank 0: one tensor of its own length per element, as each element of
    ``from_tensor_slices(ragged)`` holds (a map gives it as a dense tensor; batched, it would be ragged)."""
    import tensorflow as tf

    return any(_flat_ragged(s) for s in tf.nest.flatten(element_spec))


def _flat_ragged(spec: Any) -> bool:
    import tensorflow as tf

    return isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank == 0


def _inexact(have: Any, want: Any) -> bool:
    """Integers of ``have`` that the float dtype ``want`` may not hold exactly (more magnitude bits than its
    significand's digits), so each element is checked in the graph."""
    from tfbridge.validate import EXACT_DIGITS

    digits = EXACT_DIGITS.get(want.name)
    return bool(have.is_integer and digits is not None and have.size * 8 - (not have.is_unsigned) > digits)


def _shape_fits(have: Any, want: Any) -> bool:
    if have.rank is None:
        return True
    if have.rank != want.rank:
        return False
    return all(w is None or h is None or h == w for h, w in zip(have.as_list(), want.as_list(), strict=False))

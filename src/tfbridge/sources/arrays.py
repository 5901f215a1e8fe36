"""In-memory columns: numpy arrays (torch and TensorFlow tensors read as such), tuples/dicts of arrays, pandas
DataFrames.

Each row is one example (``batched=False`` by default). The spec is read from the arrays themselves, not
peeked, so it is exact. Rows are gathered by index inside tf.data (shuffled by index), never through Python;
with ``batched=True`` (each row a batch) they take the indexed Python route instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge import _nest
from tfbridge.errors import SpecInferenceError, TfBridgeError
from tfbridge.sources._base import BuildPlan, Built, Peek, Problems, Runner, Task, without_buckets
from tfbridge.sources.indexed import IndexedSource
from tfbridge.sources.labels import split_label

if TYPE_CHECKING:
    from tfbridge.spec import Inference, Leaf, Spec


def is_array_nest(obj: Any) -> bool:
    """An ndarray (or an in-memory torch or TensorFlow tensor), or a tuple/dict nest whose leaves are all such
    arrays (at least one).

    A top-level list is not columns but a list of elements (e.g. batches), by the Keras convention."""
    if _is_array(obj):
        return True
    if not isinstance(obj, (tuple, dict)):
        return False
    leaves = _nest.flatten(obj)[0]
    return bool(leaves) and all(_is_array(v) for v in leaves)


def _is_array(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    # a tensor's library is imported already when there is one: looked up, never imported here
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.Tensor) and hasattr(value, "numpy")  # eager, dense


def array_columns(obj: Any) -> Any:
    """``obj`` (see :func:`is_array_nest`) with every torch or TensorFlow tensor as a numpy array of its dtype."""
    from tfbridge._values import ValueProblem, torch_to_numpy

    def to_numpy(path: Any, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value
        try:
            return np.asarray(torch_to_numpy(value) if hasattr(value, "detach") else value.numpy())
        except ValueProblem as exc:
            where = _nest.format_path(path, obj) if path else "x"
            msg = f"column {where}: {exc}"
            raise SpecInferenceError(msg, path=where) from None

    if not isinstance(obj, (tuple, dict)):
        return to_numpy((), obj)
    paths, leaves, treespec = _nest.flatten_with_paths(obj)
    return _nest.unflatten(treespec, [to_numpy(p, v) for p, v in zip(paths, leaves, strict=True)])


def is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def dataframe_columns(df: Any) -> dict[str, np.ndarray]:
    """A pandas DataFrame as a dict of numpy columns, keyed by column name (strings, each once).

    Columns of numpy dtypes are taken as they are (object columns hold strings or per-row arrays and are read
    row by row); a missing value (None, NaN, NA) in an object column is refused. Extension dtypes — Arrow-backed
    (``pd.ArrowDtype``, ``"string[pyarrow]"``), nullable (``"Int64"``, ``"boolean"``, ``"Float64"``), categorical —
    are converted as Arrow columns are (``sources.columns``): missing values are refused, never made NaN."""
    from tfbridge.sources import columns as arrow

    names = list(df.columns)
    arrow.check_column_names(arrow.PANDAS, names)
    out = {}
    for i, name in enumerate(names):
        series = df.iloc[:, i]
        if not isinstance(series.dtype, np.dtype):
            out[name] = arrow.pandas_column(series, name)
            continue
        if series.dtype.kind in "mM":  # dates and durations: no tensor, as in every other kind of table
            raise arrow.unsupported_type(arrow.PANDAS, name, str(series.dtype), "temporal")
        values = series.to_numpy()
        if values.dtype == object:  # None, NA, NaT; a float NaN among numbers is a number
            absent = [v for v in values[series.isna().to_numpy()] if not isinstance(v, (float, np.floating))]
            if absent:
                kind = "text" if any(isinstance(v, (str, bytes)) for v in values) else "other"
                raise arrow.missing_values(arrow.PANDAS, name, len(absent), len(values), kind)
        out[name] = values
    return out


class _Rows:
    """Row ``i`` of every column (the indexed view of the arrays; picklable)."""

    def __init__(self, columns: Any, length: int) -> None:
        self.columns, self._len = columns, length

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        return _nest.map_structure(lambda a: a[index], self.columns)


class ArraysSource:
    """Rows of a nest of equally long arrays."""

    random_access = True
    one_shot = False
    infinite = False

    def __init__(self, obj: Any, columns: Any, batched: bool) -> None:
        self.obj, self.columns, self.batched = obj, columns, batched
        paths, leaves, _ = _nest.flatten_with_paths(columns)
        lengths = {
            _nest.format_path(p, columns): len(a) if a.ndim else None for p, a in zip(paths, leaves, strict=True)
        }
        scalars = [p for p, n in lengths.items() if n is None]
        if scalars:
            msg = (
                f"the arrays of the source need one row per example, but {', '.join(scalars)} "
                f"{'is a 0-d array' if len(scalars) == 1 else 'are 0-d arrays'} (a single value, no rows).\n"
                "Hint: give each array a leading axis of one row per example; for a single example, "
                "np.expand_dims(value, 0)."
            )
            raise SpecInferenceError(msg)
        for p, a in zip(paths, leaves, strict=True):
            masked = int(np.count_nonzero(np.ma.getmaskarray(a))) if isinstance(a, np.ma.MaskedArray) else 0
            if masked:
                where = _nest.format_path(p, columns)
                msg = (
                    f"the array {where} is a numpy masked array with {masked} masked value(s) in "
                    f"{a.size}. tfbridge does not turn a masked value into any value (its hidden data would pass "
                    f"as if it were real).\nHint: fill them first, e.g. arr.filled(0) (or arr.filled(np.nan) "
                    "for floats), or leave out the rows that hold them."
                )
                raise SpecInferenceError(msg, path=where)
        if len(set(lengths.values())) > 1:
            listing = ", ".join(f"{p}: {n if n is not None else 'a scalar'}" for p, n in lengths.items())
            msg = (
                f"the arrays of the source have different numbers of rows ({listing}).\n"
                "Hint: every array needs one row per example, the same number in each."
            )
            raise SpecInferenceError(msg)
        self._len = int(next(iter(lengths.values())) or 0)
        self.rows = IndexedSource(_Rows(columns, self._len), batched)

    @property
    def name(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    @property
    def native_route(self) -> str | None:
        if self.batched:  # rows that are batches go the Python way like any indexed source
            return None
        return "in-memory arrays are gathered by tf.data itself; no Python per element"

    def length(self) -> int:
        return self._len

    def task(self, conform: Callable[[Any, int], Any] | None) -> Task | None:
        return self.rows.task(conform) if self.batched else None

    def peek(self, n: int) -> Peek:
        return self.rows.peek(n)

    def infer(self, n: int, peek: Peek | None) -> Inference:
        from tfbridge.spec import Inference, Leaf, Spec, infer_from_samples

        if self._len == 0:
            msg = (
                "the arrays of the source are empty (0 rows): there is no element to infer a spec from.\n"
                "Hint: they hold no rows: check the code that loads them (a filter or an empty file leaves none)."
            )
            raise SpecInferenceError(msg)
        if self.batched:
            return self.rows.infer(n, peek)
        paths, leaves, treespec = _nest.flatten_with_paths(self.columns)
        out = []
        for path, arr in zip(paths, leaves, strict=False):
            where = _nest.format_path(path, self.columns)
            if arr.dtype == object:  # strings or ragged rows: read every row, the spec stays exact
                try:
                    column = infer_from_samples(list(enumerate(arr)), batched=False)
                except SpecInferenceError as exc:
                    msg = f"column {where}: {exc}"
                    raise SpecInferenceError(msg, path=where) from None
                out.append(column.structure)
            else:
                out.append(Leaf(tuple(arr.shape[1:]), _dtype(arr, where)))
        return Inference(Spec(_nest.unflatten(treespec, out), batched=False))

    def with_label(self, label: Any) -> ArraysSource:
        if not isinstance(self.columns, dict):
            split_label(self.columns, label)  # raises the explanatory error
        return ArraysSource(self.obj, split_label(self.columns, label), self.batched)

    def build(self, plan: BuildPlan) -> Built:
        if self.batched:
            return self.rows.build(plan)
        plan = without_buckets(plan)
        return Built(_gather(self, plan), batched_by_source=plan.batch_size is not None)

    def scan(self, runner: Runner | None = None, limit: int | None = None) -> Iterator[Any]:
        return self.rows.scan(None, limit)

    def check(
        self, spec: Spec, limit: int | None = None, runner: Runner | None = None, problems: Problems | None = None
    ) -> int:
        from tfbridge.validate import Conformer

        if self.batched:
            return self.rows.check(spec, limit, runner, problems)
        n = self._len if limit is None else min(limit, self._len)
        head = _nest.map_structure(lambda a: a[:n], self.columns)
        try:  # all rows at once, as one batch; row by row only to name the elements that break the spec
            Conformer(_column_spec(spec, head), finite=problems is not None and problems.finite)(head, None)
        except TfBridgeError:
            self.rows.check(spec, n, None, problems)
            if problems is None:
                raise
        return n

    def parts(self, n: int) -> list[Any]:
        return self.rows.parts(n) if self.batched else [self]


def _gather(src: ArraysSource, plan: BuildPlan) -> Any:
    from tfbridge.validate import Conformer

    conform = Conformer(_column_spec(plan.spec, src.columns), finite=plan.finite)
    return gather_rows(conform(src.columns, None), src.length(), plan)


GATHER_BLOCK_ROWS = 256  # examples (not batches) are gathered this many at a time, then split by tf.data


def gather_rows(conformed: Any, length: int, plan: BuildPlan) -> Any:
    """Rows of whole columns (conformed to their column spec) gathered by index inside tf.data: shuffled and
    sharded by index; batches gathered at once (and, with ``plan.padding``, each padded to its longest row);
    examples gathered a block at a time and split by tf.data (one by one costs about three times as much)."""
    import tensorflow as tf

    from tfbridge.validate import to_tensors

    # eager tensors are captured as inputs of the map function, never embedded in the graph as constants
    tensors = tf.nest.map_structure(
        lambda v: v if isinstance(v, (tf.RaggedTensor, tf.SparseTensor)) else tf.convert_to_tensor(v),
        to_tensors(conformed),
    )
    order = tf.data.Dataset.range(length)
    if plan.shuffle:
        order = order.shuffle(length, seed=plan.seed, reshuffle_each_iteration=True)
    if plan.shard is not None:  # the same permutation everywhere (one seed), then every pipeline its own part
        order = order.shard(*plan.shard)
    count = length if plan.shard is None else len(range(plan.shard[1], length, plan.shard[0]))

    def pick(i: Any) -> Any:
        return tf.nest.map_structure(lambda t: tf.gather(t, i), tensors)

    if plan.batch_size is not None:
        batches = order.batch(plan.batch_size, drop_remainder=plan.drop_remainder)
        if plan.padding is None:
            return batches.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        pads = tf.nest.flatten(plan.padding)

        def padded(i: Any) -> Any:
            rows = tf.nest.flatten(pick(i))
            out = [
                r.to_tensor(default_value=p) if isinstance(r, tf.RaggedTensor) else r
                for r, p in zip(rows, pads, strict=True)
            ]
            return tf.nest.pack_sequence_as(plan.spec.signature, out)

        return batches.map(padded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    blocks = order.batch(GATHER_BLOCK_ROWS).map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return split_blocks(blocks, plan.spec).apply(tf.data.experimental.assert_cardinality(count))


def split_blocks(blocks: Any, spec: Spec) -> Any:
    """Examples of a dataset of blocks (whole columns of a few examples each), split inside tf.data: with
    ``from_tensor_slices`` in a ``flat_map``, not ``unbatch()`` (TensorFlow 2.21's unbatch crashes the process on
    zero-size elements); varying dense fields, held as ragged columns, come out dense again."""
    import tensorflow as tf

    as_tuple = isinstance(blocks.element_spec, tuple)  # tf.data passes a tuple's parts as separate arguments
    densify = _densify(spec)
    examples = blocks.flat_map(lambda *parts: tf.data.Dataset.from_tensor_slices(parts if as_tuple else parts[0]))
    if densify is None:
        return examples
    return examples.map(lambda *e: densify(e if as_tuple else e[0]))


def _densify(spec: Spec) -> Callable[[Any], Any] | None:
    """For dense fields whose size varies (held as ragged columns): a function that gives those fields of an
    element back as dense tensors of the spec's shape; None when there are none."""
    import tensorflow as tf

    leaves = [leaf for _, leaf in spec.fields()]
    if not any(leaf.kind == "dense" and None in leaf.shape for leaf in leaves):
        return None

    def dense(value: Any, leaf: Leaf) -> Any:
        if leaf.kind != "dense":
            return value
        if isinstance(value, tf.RaggedTensor):
            value = value.to_tensor()
        return tf.ensure_shape(value, leaf.shape)

    def densify(element: Any) -> Any:
        flat = [dense(v, leaf) for v, leaf in zip(tf.nest.flatten(element), leaves, strict=True)]
        return tf.nest.pack_sequence_as(element, flat)

    return densify


def _column_spec(spec: Spec, columns: Any) -> Spec:
    """The spec of whole columns: a batch axis on every field; a column of rows whose shape varies (e.g. token
    lists, or images of several sizes, in a DataFrame) is held as a ragged tensor, ragged up to its last
    varying dimension, and gathering one row gives it back dense."""
    from tfbridge.spec import Leaf, Spec, add_batch_axis

    batched = add_batch_axis(spec)
    arrays = _nest.flatten(columns)[0]

    def column_leaf(leaf: Leaf, array: Any) -> Leaf:
        varying = [d for d in range(1, leaf.rank) if leaf.shape[d] is None] if leaf.kind == "dense" else []
        if varying and getattr(array, "dtype", None) == np.dtype(object):
            return Leaf(leaf.shape, leaf.dtype, "ragged", varying[-1])
        return leaf

    leaves, treespec = _nest.flatten(batched.structure)
    return Spec(_nest.unflatten(treespec, [column_leaf(lf, a) for lf, a in zip(leaves, arrays, strict=False)]), True)


def _dtype(arr: np.ndarray, where: str) -> str:
    from tfbridge._values import ValueProblem, dtype_name

    try:
        return dtype_name(arr.dtype)
    except ValueProblem as exc:
        msg = f"column {where}: {exc}.\nHint: convert such columns (e.g. dates) to numbers or strings first."
        raise SpecInferenceError(msg, path=where) from None

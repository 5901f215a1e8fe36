"""Keras side: ``keras_inputs`` builds the ``keras.Input`` nest for a source or spec; ``adapt_normalization``;
``resume_callback`` makes ``model.fit`` continue where a killed run stopped."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import warnings
from typing import Any, Literal

import numpy as np

from tfbridge import _moments, _nest, _tf, sources
from tfbridge._checks import check_choice, find_stacklevel, short
from tfbridge._progress import progress_bar
from tfbridge.errors import NonFiniteError, TfBridgeError, TfBridgeWarning
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label, check_label, split_label
from tfbridge.spec import CastFloats, Leaf, Spec, apply_float_policy, input_names


def _is_signature(obj: Any) -> bool:
    if isinstance(obj, (tuple, list, dict)) or type(obj).__module__.startswith("tensorflow"):
        leaves = _nest.flatten(_nest.normalize(obj))[0]
        if leaves and all(type(v).__name__.endswith("Spec") and hasattr(v, "shape") for v in leaves):
            return True
    return False


def keras_inputs(
    source_or_spec: Any,
    *,
    peek: int = 8,
    batched: bool | None = None,
    label: Label | None = None,
    cast_floats: CastFloats = "floatx",
) -> Any:
    """``keras.Input`` tensors for the features of a source, a Spec, or a signature nest.

    Returns one KerasTensor, or the same tuple/list/dict nest as the features. Shapes leave out the batch
    axis; dtypes follow the data (float64 becomes ``keras.config.floatx()`` unless ``cast_floats=None``);
    dict keys become input names (nested keys joined with "_", as ``spec.code()`` writes them); ragged and
    sparse fields get ``ragged=True`` / ``sparse=True``. ``label`` splits label columns off a dict-shaped
    source (or Spec, or signature) first, so they do not become inputs.
    """
    _tf.tf()  # says how to install TensorFlow when it is missing
    import keras

    if isinstance(source_or_spec, Spec) or _is_signature(source_or_spec):
        spec = source_or_spec if isinstance(source_or_spec, Spec) else Spec.from_signature(source_or_spec, batched)
        if label is not None:  # the label columns of a dict-shaped spec are no inputs either
            check_label(label)
            spec = Spec(split_label(spec.structure, label), spec.batched)
    else:
        spec = sources.infer_spec(source_or_spec, peek=peek, batched=batched, label=label)
    spec = apply_float_policy(spec, cast_floats)
    features = _nest.keras_split(spec.structure)[0]
    leaves, treespec = _nest.flatten(features)
    names = input_names(features)
    _check_backend(keras.backend.backend(), features)
    out = [_input(keras, leaf, spec.batched, name) for leaf, name in zip(leaves, names, strict=False)]
    return _nest.unflatten(treespec, out)


def _check_backend(backend: str, features: Any) -> None:
    """Keras's JAX and torch backends take dense and sparse inputs only: say so here, not deep inside fit."""
    if backend == "tensorflow":
        return
    paths, leaves, _ = _nest.flatten_with_paths(features)
    for path, leaf in zip(paths, leaves, strict=True):
        where = _nest.format_path(path, features)
        if leaf.kind == "ragged":
            msg = (
                f"the feature {where} is ragged ({leaf.describe()}), and Keras on the {backend} backend has no ragged "
                "inputs.\nHint: pad it to dense batches with tb.pad_batch(source, batch_size) (optionally bucketed), "
                "or use the tensorflow backend."
            )
            raise TfBridgeError(msg)
        if leaf.dtype == "string":
            msg = (
                f"the feature {where} holds strings, which Keras on the {backend} backend cannot take as input.\n"
                "Hint: turn text into numbers inside the tf.data pipeline before the model (e.g. "
                "dataset.map with a keras.layers.StringLookup or TextVectorization adapted beforehand), or use the "
                "tensorflow backend."
            )
            raise TfBridgeError(msg)


def _input(keras: Any, leaf: Leaf, batched: bool, name: str | None) -> Any:
    shape = leaf.shape[1:] if batched else leaf.shape
    kwargs: dict[str, Any] = {"shape": shape, "dtype": leaf.dtype}
    if leaf.kind == "ragged":
        kwargs["ragged"] = True
    if leaf.kind == "sparse":
        kwargs["sparse"] = True
    if name is not None:
        kwargs["name"] = name
    return keras.Input(**kwargs)


def adapt_normalization(
    source: Any,
    *,
    path: str | None = None,
    axis: int | None = -1,
    mask_value: float | None = None,
    batched: bool | None = None,
    label: Label | None = None,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    verbose: bool | None = None,
    non_finite: NonFinite = "warn",
) -> Any:
    """A ``keras.layers.Normalization`` whose mean and variance are exact over the whole source.

    One streaming pass (through the executors for Python sources): each batch gives its count, mean and sum of
    squared deviations in float64, merged with the numerically stable pairwise formula, so no statistic is per
    batch and none is sampled. ``path`` picks the feature (None: the features when they are one tensor; a
    string: that key of a dict of features). ``axis`` is the feature axis kept, as in Keras (None: one mean and
    variance over everything). ``mask_value`` skips timesteps whose features all equal it, as
    ``keras.layers.Masking`` does. ``label`` splits label columns off a dict-shaped source first;
    ``executor``/``workers`` say who produces a Python source's elements (as for ``to_dataset``). ``verbose``
    shows a progress bar (None: when stderr is a terminal).

    ``non_finite`` says what a NaN or Inf in the feature does: "warn" (the default) warns naming the feature, the
    first element that holds one and how many there are (the mean and variance then come out NaN, as Keras's own
    ``adapt`` would give); "skip" leaves out every row (the features at one position along ``axis``) that holds
    one and says how many it left out; "raise" raises ``NonFiniteError`` at the first.
    """
    import keras
    import tensorflow as tf

    from tfbridge.pipeline import build

    check_choice("non_finite", non_finite, _NON_FINITE)
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        msg = (
            f"axis must be an int (the feature axis kept, as in keras.layers.Normalization) or None. "
            f"Received: axis={short(axis)}\nHint: several kept axes are not supported; reshape the feature so "
            "that one axis holds them, or pass axis=None for one mean and variance over everything."
        )
        raise TfBridgeError(msg)
    if mask_value is not None and axis not in (-1,):
        msg = (
            f"mask_value skips timesteps (all features along the last axis equal to it), so it needs axis=-1. "
            f"Received: axis={short(axis)}"
        )
        raise TfBridgeError(msg)
    from tfbridge import sources

    one_shot = not isinstance(source, tf.data.Dataset) and sources.adapt(source, batched=batched).one_shot
    with warnings.catch_warnings():
        if one_shot:  # said below, as it concerns this call: the iterator is used up, not "one epoch"
            warnings.filterwarnings("ignore", message=".*is a one-shot iterator: the dataset gives one epoch")
        ds, spec = build(source, batched=batched, label=label, executor=executor, workers=workers, cast_floats=None)
    if one_shot:
        warnings.warn(
            "adapt_normalization reads every element of a one-shot iterator: it is used up by this call, and a "
            "later tb.to_dataset of it gives nothing more.\n"
            "Hint: pass a generator function (the function, not its result) or a re-iterable, to read the data "
            "again for training.",
            TfBridgeWarning,
            stacklevel=find_stacklevel(),
        )
    per_batch = 1 if spec.batched else _EXAMPLES_PER_BATCH
    if not spec.batched:  # examples of varying length become ragged rows: no padding enters the statistics
        ds = ds.ragged_batch(_EXAMPLES_PER_BATCH)
    element = ds.element_spec
    select = _feature_selector(element, path)
    feature_spec = select(element)
    rank = feature_spec.shape.rank
    if axis is not None and not (-rank + 1 <= axis < rank and axis != 0):  # axis 0 is the batch axis
        what = "the batch axis" if axis in (0, -rank) else "out of range"
        msg = (
            f"axis={axis} is {what} for the feature's batched shape {feature_spec.shape}: the axis kept must be one "
            f"of its feature axes ({_feature_axes(rank)}).\nHint: pass axis=None for one mean and variance over "
            "everything."
        )
        raise TfBridgeError(msg)

    def batch_stats(position: Any, *parts: Any) -> Any:
        x = select(parts[0] if len(parts) == 1 else parts)
        finite = tf.math.is_finite(tf.cast(x.flat_values if isinstance(x, tf.RaggedTensor) else x, tf.float64))
        if isinstance(x, tf.RaggedTensor):
            finite = x.with_flat_values(finite)
        bad_rows = tf.logical_not(finite)
        for _ in range(x.shape.rank - 1):  # any non-finite value, per row of the batch
            bad_rows = tf.reduce_any(bad_rows, axis=-1)
        bad = tf.reduce_sum(tf.cast(tf.logical_not(finite.flat_values if isinstance(x, tf.RaggedTensor)
                                                   else finite), tf.int64))  # fmt: skip
        first = tf.where(tf.reduce_any(bad_rows), tf.argmax(tf.cast(bad_rows, tf.int32), output_type=tf.int64), -1)
        first = (
            tf.where(first >= 0, position * per_batch + first, -1)
            if per_batch > 1
            else tf.where(first >= 0, position, -1)
        )
        x = x.flat_values if isinstance(x, tf.RaggedTensor) else x
        x = tf.cast(x, tf.float64)
        if axis is None:
            rows = tf.reshape(x, (-1, 1))
        else:
            moved = tf.experimental.numpy.moveaxis(x, axis, -1)
            rows = tf.reshape(moved, (-1, tf.shape(moved)[-1]))
        if non_finite == "skip":
            rows = tf.boolean_mask(rows, tf.reduce_all(tf.math.is_finite(rows), axis=-1))
        if mask_value is not None:
            rows = tf.boolean_mask(rows, tf.reduce_any(tf.not_equal(rows, mask_value), axis=-1))
        count = tf.shape(rows, out_type=tf.int64)[0]
        mean = tf.math.divide_no_nan(tf.reduce_sum(rows, 0), tf.cast(count, tf.float64))
        m2 = tf.reduce_sum(tf.square(rows - mean), 0)
        return count, mean, m2, bad, first

    stats = ds.enumerate().map(batch_stats, num_parallel_calls=tf.data.AUTOTUNE)
    total = int(stats.cardinality())
    if total == int(tf.data.INFINITE_CARDINALITY):
        msg = (
            "the source is infinite (a tf.data pipeline that repeats): adapt_normalization's pass over all of it "
            "would never end.\nHint: pass the pipeline before its .repeat(), or a finite part of it (.take(n))."
        )
        raise TfBridgeError(msg)
    stats = stats.batch(_BATCHES_PER_MERGE).prefetch(2)  # merge many batches' moments per Python step
    bar = progress_bar(verbose, total, "batch")
    n, step, bad_values, first_bad = 0, 0, 0, -1
    mean: Any = None
    m2: Any = None
    from tfbridge.sources._base import as_raised

    with as_raised():  # a source's error is raised as it is (SourceError), not in TensorFlow's op error
        for counts, means, m2s, bads, firsts in stats.as_numpy_iterator():
            if first_bad < 0 and (firsts >= 0).any():
                first_bad = int(firsts[firsts >= 0].min())
                if non_finite == "raise":
                    raise _non_finite_error(path, first_bad, spec.batched)
            bad_values += int(bads.sum())
            with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf: said once, below
                n, mean, m2 = _moments.merge(n, mean, m2, *_moments.combine(counts, means, m2s))
            step += len(counts)
            if bar is not None:
                bar.update(step)
    if bad_values:
        _warn_non_finite(path, first_bad, bad_values, spec.batched, non_finite)
    if n == 0 or mean is None:
        msg = "adapt_normalization found no values to compute statistics from (empty source, or everything masked)."
        raise TfBridgeError(msg)
    variance = m2 / n
    if axis is None:
        layer = keras.layers.Normalization(axis=None, mean=float(mean[0]), variance=float(variance[0]))
    else:
        layer = keras.layers.Normalization(axis=axis, mean=mean, variance=variance)
    shape = feature_spec.shape.as_list()
    layer.build(tuple(shape))  # mean and variance are readable at once, as after Keras's own adapt()
    return layer


def _feature_axes(rank: int) -> str:
    if rank <= 1:
        return "it has none: each example is a scalar"
    if rank == 2:
        return "1, or -1"
    return f"1 to {rank - 1}, or -{rank - 1} to -1"


_BATCHES_PER_MERGE = 64
_EXAMPLES_PER_BATCH = 1024
NonFinite = Literal["warn", "skip", "raise"]
_NON_FINITE: tuple[NonFinite, ...] = ("warn", "skip", "raise")


def _feature_holds(path: str | None) -> str:
    return "the features hold" if path is None else f"feature {path!r} holds"


def _non_finite_error(path: str | None, element: int, batched: bool) -> NonFiniteError:
    what = "a batch" if batched else "an example"
    msg = (
        f"{_feature_holds(path)} NaN or Inf in element {element} ({what}); the mean and variance would be NaN.\n"
        'Hint: fix such values in the source, or pass non_finite="skip" to leave them out of the statistics; '
        "tb.validate(source, finite=True) lists every element that holds one."
    )
    return NonFiniteError(msg, index=element, path=path or "", expected="finite values", got="NaN or Inf")


def _warn_non_finite(path: str | None, element: int, values: int, batched: bool, policy: NonFinite) -> None:
    what = "a batch" if batched else "an example"
    if policy == "skip":
        said = "rows holding them were left out of the mean and variance"
        hint = "fix them in the source to use those rows"
    else:
        said = "the mean and variance are NaN: a model normalised with them trains to a NaN loss"
        hint = 'pass non_finite="skip" to leave them out, or fix them in the source'
    warnings.warn(
        f"{_feature_holds(path)} {values} NaN or Inf value(s), the first in element {element} ({what}); "
        f"{said}.\nHint: {hint}; tb.validate(source, finite=True) lists every element that holds one.",
        TfBridgeWarning,
        stacklevel=find_stacklevel(),
    )


def _feature_selector(element: Any, path: str | None) -> Any:
    features = _nest.keras_split(_nest.normalize(element))[0]
    if path is None and isinstance(features, dict) and len(features) == 1:  # one feature left (label= split off)
        (only,) = features
        return lambda e: _nest.keras_split(e)[0][only]
    if path is None:
        if isinstance(features, (tuple, list, dict)):
            keys = sorted(features) if isinstance(features, dict) else list(range(len(features)))
            msg = (
                f"the features are a {type(features).__name__} with {keys}; say which one to normalise.\n"
                "Hint: pass path='name' for a dict of features."
            )
            raise TfBridgeError(msg)
        return lambda e: _nest.keras_split(e)[0]
    if not isinstance(features, dict) or path not in features:
        have = sorted(features) if isinstance(features, dict) else _nest.describe_structure(features)
        msg = f"path={path!r} names no feature. The features are: {have}. Received: path={short(path)}"
        raise TfBridgeError(msg)
    return lambda e: _nest.keras_split(e)[0][path]


# -- resuming model.fit where it stopped ------------------------------------------------------------------------

_OUT_OF_DATA = "Your input ran out of data"  # Keras's warning when a resumed epoch ends before its full count
_STATE = "state.json"
_LATEST = "latest"


def resume_callback(dataset: Any, backup_dir: str | Any, *, save_freq: int | Literal["epoch"] = "epoch") -> Any:
    """A Keras callback that makes ``model.fit(dataset, ...)`` continue, after the process was killed anywhere,
    at the first batch it had not trained on.

    Every ``save_freq`` batches (and at the end of every epoch) it saves, in ``backup_dir``, the model's weights
    and its optimizer's state, the epoch and step, and where ``dataset``'s iterator stands
    (``tf.train.Checkpoint`` of Keras's own iterator over ``dataset``). When ``fit`` starts again with the same
    callback (the same command), it restores them all: the interrupted epoch goes on from the next batch, with
    that epoch's order, and the later epochs are the uninterrupted run's. Each save replaces the one before it,
    atomically: a kill during a save leaves the previous one whole. ``backup_dir`` is removed when ``fit``
    ends normally.

    ``dataset`` must be one tfbridge built from an indexed source (``to_dataset``, ``pad_batch``; also with
    steps added after it), or any tf.data pipeline TensorFlow can checkpoint. Batches trained after the last
    save are trained again after a restart (``save_freq=1`` saves after every batch). Keras's own
    ``BackupAndRestore`` restarts an interrupted epoch from its first batch instead. The model must be built
    before ``fit`` (call it on a batch), as for ``BackupAndRestore``.

    Example::

        ds = tb.to_dataset(train_seq, shuffle=True, seed=1)
        model(next(iter(ds))[0])                       # built before fit
        model.fit(ds, epochs=10, callbacks=[tb.resume_callback(ds, "/ckpt/run1", save_freq=200)])
    """
    import keras

    from tfbridge.sources._positions import passes_in

    if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
        msg = (
            f"save_freq must be 'epoch' or a positive number of batches. Received: {short(save_freq)}\n"
            "Hint: pass save_freq='epoch' (a save at the end of each epoch) or e.g. save_freq=100."
        )
        raise TfBridgeError(msg)
    if not hasattr(dataset, "element_spec") or not hasattr(dataset, "_inputs"):
        msg = (
            f"resume_callback needs the tf.data.Dataset given to model.fit. Received: {short(dataset)}\n"
            "Hint: pass the dataset tb.to_dataset (or tb.pad_batch) returned."
        )
        raise TfBridgeError(msg)
    return _resume_class(keras)(dataset, str(backup_dir), save_freq, passes_in(dataset))


@functools.cache
def _resume_class(keras: Any) -> Any:
    """The callback class, made once Keras is imported (``import tfbridge`` does not import it)."""

    class ResumeCallback(keras.callbacks.Callback):  # type: ignore[misc]
        """See :func:`tfbridge.resume_callback`."""

        def __init__(self, dataset: Any, backup_dir: str, save_freq: Any, passes: list[Any]) -> None:
            super().__init__()
            self.dataset, self.backup_dir, self.save_freq, self.passes = dataset, backup_dir, save_freq, passes
            self._iterator: Any = None
            self._epoch_iterator: Any = None
            self._resumed_epoch: int | None = None
            self._restore: str | None = None
            self._original: Any = None
            self._epoch = 0
            self._since_save = 0
            self._filters: list[Any] | None = None
            self._done = 0  # batches of the current epoch trained (a resumed epoch counts those before the stop)
            self._resumed_done: int | None = None  # batches the resumed epoch had trained when it was saved

        # -- fit's life ----------------------------------------------------------------------------------
        def on_train_begin(self, logs: Any = None) -> None:
            model = self.model
            _check_fit(model, self.dataset, self.params)
            if getattr(model.train_function, "__self__", None) is not self:  # not still wrapped (a fit that raised)
                self._original = model.train_function
                model.train_function = self._train_function
            self._iterator, self._resumed_epoch, self._resumed_done = None, None, None
            state = _read_state(self.backup_dir)
            if state is None:
                return
            where, meta = state
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(where, "model.weights.h5"))
            model._initial_epoch = meta["epoch"]  # what Keras's BackupAndRestore sets: fit starts there
            if meta["iterator"]:
                self._restore = os.path.join(where, "iterator")
                self._resumed_epoch = meta["epoch"]
                self._resumed_done = meta.get("done")
                self._filters = list(warnings.filters)  # the resumed epoch ends before its full count: expected
                warnings.filterwarnings("ignore", message=_OUT_OF_DATA)
            else:
                for passes, epoch in zip(self.passes, meta["next_pass"], strict=False):
                    passes.start_next_at(epoch, 0)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch
            self._done = self._resumed_done or 0 if epoch == self._resumed_epoch else 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._since_save += 1
            self._done += 1
            if self.save_freq != "epoch" and self._since_save >= self.save_freq:
                self._save(mid_epoch=True)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self._filters is not None:
                warnings.filters[:] = self._filters  # type: ignore[index]
                self._filters = None
            cardinality = int(self.dataset.cardinality())
            if epoch == self._resumed_epoch and self._epoch_iterator is not None:
                # the resumed epoch was shorter: the next ones are whole again (Keras takes the length of an epoch
                # of unknown length from the first one it runs)
                self._epoch_iterator._num_batches = cardinality if cardinality >= 0 else None
            self._epoch = epoch + 1
            self._save(mid_epoch=False)

        def on_train_end(self, logs: Any = None) -> None:
            if self._original is not None:
                self.model.train_function = self._original
            self.model._initial_epoch = None
            with contextlib.suppress(FileNotFoundError):  # first: a kill during the removal leaves no half state
                os.remove(os.path.join(self.backup_dir, _LATEST))
            shutil.rmtree(self.backup_dir, ignore_errors=True)

        # -- inside --------------------------------------------------------------------------------------
        def _train_function(self, iterator: Any) -> Any:
            if iterator is not self._iterator:  # a new epoch's iterator (Keras makes one per epoch)
                self._iterator = iterator
                self._epoch_iterator = sys._getframe(1).f_locals.get("epoch_iterator")  # fit's, for its count
                if self._restore is not None:
                    _restore_iterator(iterator, self._restore)
                    self._restore = None
                    cardinality = int(self.dataset.cardinality())
                    if self._resumed_done is not None and cardinality >= 0 and self._epoch_iterator is not None:
                        # the epoch ends with its last batch: asked for one more, Keras would run a step that
                        # finds no data, which still counts in optimizer.iterations (Adam's bias correction and
                        # learning-rate schedules then drift by one step per resume)
                        self._epoch_iterator._num_batches = cardinality - self._resumed_done
            return self._original(iterator)

        def _save(self, mid_epoch: bool) -> None:
            self._since_save = 0
            os.makedirs(self.backup_dir, exist_ok=True)
            where = tempfile.mkdtemp(prefix="state-", dir=self.backup_dir)
            self.model.save_weights(os.path.join(where, "model.weights.h5"))
            meta: dict[str, Any] = {"epoch": self._epoch, "iterator": mid_epoch and self._iterator is not None}
            meta["done"] = self._done
            if meta["iterator"]:
                _save_iterator(self._iterator, os.path.join(where, "iterator"))
            meta["next_pass"] = [p.epoch for p in self.passes]
            with open(os.path.join(where, _STATE), "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            _point_to(self.backup_dir, where)

    return ResumeCallback


def _check_fit(model: Any, dataset: Any, params: dict[str, Any]) -> None:
    """Refuse, before any training, what resume_callback cannot resume exactly."""
    if not model.built:
        msg = (
            "resume_callback needs a model built before fit: its saved weights are loaded at the start of fit.\n"
            "Hint: call the model on a batch first, e.g. model(next(iter(ds))[0]), as for Keras's BackupAndRestore."
        )
        raise TfBridgeError(msg)
    cardinality = int(dataset.cardinality())
    steps = params.get("steps")
    if steps is not None and steps != cardinality:
        msg = (
            f"resume_callback resumes fits whose epochs are each one pass over the dataset, but this fit runs "
            f"{steps} steps per epoch over a dataset of {cardinality if cardinality >= 0 else 'unknown'} "
            "batches (steps_per_epoch).\nHint: leave steps_per_epoch out; for epochs shorter than the data, "
            "checkpoint an iterator yourself with tf.train.Checkpoint(iterator=...) in a custom loop."
        )
        raise TfBridgeError(msg)


def _save_iterator(iterator: Any, path: str) -> None:
    import tensorflow as tf

    try:
        tf.train.Checkpoint(iterator=iterator).write(path)
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        msg = (
            f"resume_callback cannot save where the dataset's iterator stands: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}\n"
            "Hint: a step of the pipeline cannot be saved (e.g. a tf.data.Dataset.from_generator, or a "
            "py_function, in the dataset given to fit). Build the dataset with tb.to_dataset or tb.pad_batch "
            "from your source instead, or save at epoch ends only (save_freq='epoch')."
        )
        raise TfBridgeError(msg) from None


def _restore_iterator(iterator: Any, path: str) -> None:
    import tensorflow as tf

    tf.train.Checkpoint(iterator=iterator).read(path).assert_consumed()


def _point_to(backup_dir: str, where: str) -> None:
    """Make ``where`` the state to restore, atomically, and remove the states before it."""
    pointer = os.path.join(backup_dir, _LATEST)
    fd, tmp = tempfile.mkstemp(dir=backup_dir, prefix=".latest-")
    with os.fdopen(fd, "w") as f:
        f.write(os.path.basename(where))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pointer)
    directory = os.open(backup_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new pointer is on disk before the state it replaces goes
    finally:
        os.close(directory)
    for name in os.listdir(backup_dir):
        if name.startswith(("state-", ".latest-")) and name != os.path.basename(where):
            path = os.path.join(backup_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def _read_state(backup_dir: str) -> tuple[str, dict[str, Any]] | None:
    """The state ``latest`` names, or None when there is none (a first run)."""
    try:
        with open(os.path.join(backup_dir, _LATEST)) as f:
            where = os.path.join(backup_dir, f.read().strip())
        with open(os.path.join(where, _STATE)) as f:
            return where, json.load(f)
    except FileNotFoundError:
        return None

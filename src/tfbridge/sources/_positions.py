"""Index-driven passes: the route of Python sources into tf.data whose position lives in tf.data's own state.

A pass is one iterator's walk over an epoch. Its identity (epoch, a random nonce, the shuffle seed, the position
it starts at) is the element of a one-element dataset made when the iterator first asks; inside it, a ``scan``
holds the position of the next element, and each step asks Python (``numpy_function``) for the elements from
that position on: a chunk of small ones, or a single big one. Everything an iterator holds is therefore native
tf.data state, and ``tf.train.Checkpoint(iterator=...)`` saves and restores it (TensorFlow refuses to checkpoint
``from_generator``). A restored iterator, in this process or another, asks for the position it stood at; the
Python side, finding no pass there, opens one at that position: an indexed source computes exactly the
elements from there on (no replay), a re-iterable stream is read again and the consumed elements dropped.

Python computes ahead: a pass keeps its executor's ordered map running between steps, so workers are busy
while TensorFlow consumes. An error ends the pass's elements; the step after the elements before it raises it
(see ``raised`` in :func:`positioned_dataset`), so nothing made before the error is lost.
"""

from __future__ import annotations

import bisect
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tfbridge import _chunks, _nest
from tfbridge.errors import TfBridgeError, TfBridgeWarning
from tfbridge.executors._base import STALL
from tfbridge.sources._base import into_tf_data
from tfbridge.validate import RaggedParts, SparseParts

_ENDED_KEPT = 1024  # passes remembered as ended, with where they ended


class Feed(Protocol):
    """What a kind of source gives the index-driven route."""

    @property
    def name(self) -> str: ...

    @property
    def count(self) -> int | None:
        """Elements in a pass; None: not known (a stream)."""
        ...

    @property
    def chunk(self) -> bool:
        """Small dense elements: many per step."""
        ...

    def open(self, epoch: int, seed: int, position: int) -> Iterator[Any]:
        """The pass's elements from ``position`` on, as nests of numpy values; may yield ``STALL`` (when the
        next element keeps the consumer waiting). A new pass of the dataset opens at position 0."""
        ...

    def begin(self) -> None:
        """Before a pass's first element (the source's ``on_epoch_begin``)."""
        ...

    def end(self) -> None:
        """After a pass's last element (the source's ``on_epoch_end``)."""
        ...


@dataclass(frozen=True)
class Bucketing:
    """``pad_batch`` with buckets done where the elements are made: each step delivers one padded batch, and
    tf.data's state holds, beside the position, which elements wait in each bucket (positions in the pass), so a
    restored iterator makes exactly the same batches. Buckets follow tf.data's ``bucket_by_sequence_length``:
    bucket ``i`` holds lengths ``boundaries[i-1] <= n < boundaries[i]``; a bucket's batch goes as soon as it is
    full, and at the end of a pass the partial ones go in bucket order (none with ``drop_remainder``)."""

    boundaries: tuple[int, ...]
    batch_size: int
    pads: tuple[Any, ...]  # per leaf of the spec: the value a batch is padded with
    length_at: tuple[int, int]  # (leaf, axis): an element's length is that axis's size in that leaf
    drop_remainder: bool = False

    @property
    def buckets(self) -> int:
        return len(self.boundaries) + 1

    def bucket(self, leaves: list[Any]) -> int:
        leaf, axis = self.length_at
        return bisect.bisect_right(self.boundaries, leaves[leaf].shape[axis])


@dataclass(eq=False)
class _Pass:
    key: tuple[int, int]
    position: int  # of the next element the pass will be asked for
    elements: Iterator[Any]
    held: Any = None  # an element read but not delivered (it did not fit the chunk)
    busy: bool = False  # inside a step (in a tf.data thread): no other thread may close it
    doomed: bool = False  # its dataset went while it was busy: its step closes it
    waiting: list[list[tuple[int, list[Any]]]] | None = None  # bucketing: (position, leaves) in each bucket
    flushing: bool = False  # bucketing: every element is in; the partial batches go
    error: BaseException | None = None  # bucketing: the error the elements ended with, raised after the flush

    def members(self) -> list[list[int]]:
        return [[at for at, _ in rows] for rows in self.waiting or []]

    def close(self) -> None:
        close = getattr(self.elements, "close", None)
        if close is not None:
            close()


class Passes:
    """The Python side of one index-driven dataset: its passes, by (epoch, nonce), and the errors they ended with.

    ``seed`` orders shuffled epochs; when the user gave none (``seed_given`` False) a restored pass's seed is
    adopted, so the passes after it continue that run's order. The epoch counter follows restored passes too.
    """

    def __init__(
        self,
        feed: Feed,
        signature: Any,
        seed: int,
        seed_given: bool,
        errors: list[BaseException] | None,
        bucketing: Bucketing | None = None,
    ):
        import tensorflow as tf

        self.feed, self.seed, self.seed_given, self.collect = feed, seed, seed_given, errors
        self.bucketing = bucketing
        self.specs = tf.nest.flatten(signature)
        # a signature of one dense numeric field, or a plain tuple of them: numpy leaves need no flattening
        numeric = all(isinstance(s, tf.TensorSpec) and s.dtype != tf.string for s in self.specs)
        self.bare = numeric and isinstance(signature, tf.TensorSpec)
        self.flat_tuple = numeric and type(signature) is tuple and len(self.specs) == len(signature)
        self.epoch = 0  # of the next new pass
        self.resume_at: tuple[int, int] | None = None  # (epoch, position) the next new pass starts at
        self.live: list[_Pass] = []  # passes with their executor's work running (two may share a key: a restore)
        self.opened: OrderedDict[tuple[int, int], None] = OrderedDict()  # passes opened here (not restored)
        self.failed: dict[tuple[int, int], BaseException] = {}
        # where each recent pass ended (its last step, or its error): tf.data asks a pass again after its error,
        # and the answer must be the end, not a pass reopened there (a restored iterator asks elsewhere)
        self.ended: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.lock = threading.Lock()
        self.rng = np.random.default_rng()

    # -- called from the graph -------------------------------------------------------------------------
    def next_pass(self) -> np.ndarray:
        """(epoch, nonce, seed, start) of a new pass."""
        with self.lock:
            epoch, start = self.resume_at if self.resume_at is not None else (self.epoch, 0)
            self.resume_at = None
            self.epoch = max(self.epoch, epoch + 1)
            nonce = int(self.rng.integers(2**62))
            self.opened[(epoch, nonce)] = None
            while len(self.opened) > _ENDED_KEPT:
                self.opened.popitem(last=False)
            return np.array([epoch, nonce, self.seed, start], np.int64)

    def fetch(self, info: np.ndarray, position: np.ndarray) -> list[Any]:
        """The step at ``position`` of the pass ``info``: [count, *leaves]; count 0 ends the pass, -1 ends it with
        an error, which :meth:`check` raises, and -2 (NOT_YET) holds nothing yet: the next element keeps the pass
        waiting, and the step returns to TensorFlow, which asks again at the same position."""
        epoch, nonce, seed, _ = (int(v) for v in info)
        key, at = (epoch, nonce), int(position)
        try:
            p = self._pass(key, epoch, seed, at)  # marked busy: no other thread closes it during this step
        except Exception as exc:
            return self._fail(key, exc, at)
        if p is None:  # it failed: this step ends it, with its error
            return self._empty(key)
        waiting = False
        try:
            group, error, waiting = self._take(p)
            p.position += len(group)
        except Exception as exc:
            group, error = [], exc
        if not group and error is None and not waiting:  # the end of the pass
            self._drop(p, None)
            if self.feed.count is None or p.position == self.feed.count:
                self._end_hook(key, p.position)
            return self._empty(key)
        if error is not None:
            self._drop(p, error)
        else:
            with self.lock:
                p.busy = False
                doomed = p.doomed
            if doomed:  # closed while in this step
                p.close()
        if group:
            return self._encode(group)
        return self._not_yet() if error is None else self._empty(key)

    def fetch_batch(self, info: np.ndarray, position: np.ndarray, members: np.ndarray, fills: np.ndarray) -> list[Any]:
        """The step of a bucketing pass at ``position`` with ``members`` waiting in its buckets (``fills`` of each
        row): [count, position, members, fills, *leaves of one padded batch]; count 0 ends the pass, -1 ends it
        with an error, which :meth:`check` raises."""
        epoch, nonce, seed, _ = (int(v) for v in info)
        key, at = (epoch, nonce), int(position)
        wanted = [[int(v) for v in row[: int(n)]] for row, n in zip(members, fills, strict=True)]
        try:
            p = self._pass(key, epoch, seed, at, wanted)
        except Exception as exc:
            return self._fail(key, exc, at)
        if p is None:
            return self._empty(key)
        try:
            rows = self._next_batch(p)
            if rows is NOT_YET:  # the next element keeps the pass waiting: back to TensorFlow, same state
                with self.lock:
                    p.busy = False
                    doomed = p.doomed
                if doomed:
                    p.close()
                return self._not_yet(p)
            batch = None if rows is None else self._encode_batch(p, rows)
        except Exception as exc:  # a batch that cannot be made (elements of another structure): the pass ends
            batch, p.error = None, exc
        if batch is None:  # the end of the pass (and of the partial batches)
            self._drop(p, p.error)
            if p.error is None and (self.feed.count is None or p.position == self.feed.count):
                self._end_hook(key, p.position)
            return self._empty(key)
        with self.lock:
            p.busy = False
            doomed = p.doomed
        if doomed:
            p.close()
        return batch

    def check(self, info: np.ndarray) -> np.ndarray:
        """Raise the error the pass ``info`` ended with; False when it ended without one."""
        key = (int(info[0]), int(info[1]))
        with self.lock:
            error = self.failed.pop(key, None)
        if error is None:
            return np.asarray(False)
        return self._raise(error)

    def _raise(self, error: BaseException) -> np.ndarray:
        if self.collect is not None:  # materialize raises it itself (Dataset.save hangs on an input's error)
            self.collect.append(error)
            return np.asarray(False)
        raise into_tf_data(error)

    # -- for the Keras callback and tests ---------------------------------------------------------------
    def start_next_at(self, epoch: int, position: int) -> None:
        """Make the next new pass epoch ``epoch``, starting at ``position``."""
        with self.lock:
            self.resume_at = (int(epoch), int(position))

    def close(self) -> None:
        """Close every pass (the dataset is gone); one inside a step is closed by its step when it returns."""
        with self.lock:
            passes, self.live = self.live, []
            for p in passes:
                p.doomed = True
            idle = [p for p in passes if not p.busy]
        for p in idle:
            p.close()

    # -- inside ------------------------------------------------------------------------------------------
    def _pass(
        self, key: tuple[int, int], epoch: int, seed: int, at: int, wanted: list[list[int]] | None = None
    ) -> _Pass | None:
        """The pass ``key`` standing at ``at`` (with the elements ``wanted`` waiting in its buckets, when it
        buckets), marked busy: the live one there, or one opened there."""
        with self.lock:
            if key in self.failed or (self.ended.get(key) == at and not any(wanted or [])):
                return None  # (a bucketing pass restored at its end still has its partial batches to give)
            same = [p for p in self.live if p.key == key and not p.busy]
            for p in same:
                if p.position == at and (wanted is None or p.members() == wanted):
                    p.busy = True
                    return p
            # opened here: a restored pass, a pass reopened after it was closed while waiting, or a new one.
            # A new pass (at 0) also closes the passes waiting between steps: usually an iterator dropped
            # part-way (TensorFlow does not say); one still in use reopens where it stands when it next asks
            stale = same + ([p for p in self.live if not p.busy and p not in same] if at == 0 else [])
            self.live = [p for p in self.live if p not in stale]
            if key in self.opened:
                self.epoch = max(self.epoch, epoch + 1)
            else:  # restored from a checkpoint: the passes after it follow on from it
                self.epoch = epoch + 1
                if not self.seed_given:
                    self.seed = seed
                self.opened[key] = None
                while len(self.opened) > _ENDED_KEPT:
                    self.opened.popitem(last=False)
        for p in stale:
            p.close()
        if at == 0:
            self.feed.begin()
        if wanted is None:
            opened = _Pass(key, at, self.feed.open(epoch, seed, at), busy=True)
        else:
            opened = self._refill(key, epoch, seed, at, wanted)
        with self.lock:
            self.live.append(opened)
        return opened

    def _refill(self, key: tuple[int, int], epoch: int, seed: int, at: int, wanted: list[list[int]]) -> _Pass:
        """A bucketing pass opened at ``at`` with the elements ``wanted`` (positions before ``at``) made again and
        put back in their buckets: read from the first of them, keeping only those."""
        keep = {position: bucket for bucket, positions in enumerate(wanted) for position in positions}
        start = min(keep, default=at)
        elements = self.feed.open(epoch, seed, start)
        opened = _Pass(key, at, elements, busy=True, waiting=[[] for _ in wanted])
        assert opened.waiting is not None
        position = start
        try:
            while position < at:
                element = next(elements)
                if element is STALL:
                    continue
                if position in keep:
                    opened.waiting[keep[position]].append((position, self._leaves(element)))
                position += 1
        except StopIteration:
            opened.close()
            msg = (
                f"{self.feed.name} ended after {position} elements, but the saved iterator stood at element {at} "
                "of this pass: the source holds fewer elements than when the checkpoint was written."
            )
            raise TfBridgeError(msg) from None
        except BaseException:
            opened.close()
            raise
        return opened

    def _end_hook(self, key: tuple[int, int], at: int) -> None:
        """The source's on_epoch_end, after the whole pass ``key``. Its error is raised by the step after the
        pass's last element, and said at once in a warning: Keras's fit stops at an epoch's known length and never
        asks for that step (nor does anything that takes a set number of steps)."""
        try:
            self.feed.end()
        except Exception as exc:
            self._fail(key, exc, at)
            said = str(exc).split("\nHint:")[0]  # its hint points at a traceback a warning does not show
            msg = (
                f"{said}\n(raised by the dataset's step after the epoch's last element: a loop that stops at the "
                "epoch's length, as Keras's fit does, never asks for that step, so it is said here too)"
            )
            warnings.warn(msg, TfBridgeWarning, stacklevel=1)

    def _drop(self, p: _Pass, error: BaseException | None) -> None:
        """End ``p``: at its end (``error`` None) or at ``error``, raised by the step after this one."""
        with self.lock:
            if p in self.live:
                self.live.remove(p)
            if error is not None:
                self.failed[p.key] = error
            self._ended(p.key, p.position)
        p.close()

    def _fail(self, key: tuple[int, int], exc: BaseException, at: int) -> list[Any]:
        with self.lock:
            self.failed[key] = exc
            self._ended(key, at)
        return self._empty(key)

    def _ended(self, key: tuple[int, int], at: int) -> None:
        self.ended[key] = at
        self.ended.move_to_end(key)
        while len(self.ended) > _ENDED_KEPT:
            self.ended.popitem(last=False)

    def _take(self, p: _Pass) -> tuple[list[Any], BaseException | None, bool]:
        """The next elements of ``p``: up to a chunk's worth of small ones, or one; the error that came after
        them; and whether the next element keeps the pass waiting (then the elements may be none yet)."""
        group: list[list[Any]] = []
        size, started = 0, 0.0
        limit = _chunks.CHUNK_MAX_ELEMENTS if self.feed.chunk else 1
        while len(group) < limit:
            if p.held is not None:
                element, p.held = p.held, None
            else:
                try:
                    element = next(p.elements)
                except StopIteration:
                    break
                except Exception as exc:
                    return group, exc, False
            if element is STALL:  # what is held goes now (none: the step steps out, asked again)
                return group, None, True
            leaves = self._leaves(element)
            if group:
                if size >= _chunks.CHUNK_MAX_BYTES or time.perf_counter() - started >= _chunks.CHUNK_MAX_WAIT_S:
                    p.held = element
                    break
            else:
                started = time.perf_counter()
            group.append(leaves)
            size += sum(_chunks.nbytes(leaf) for leaf in leaves)
        return group, None, False

    def _next_batch(self, p: _Pass) -> Any:
        """The leaves of the next batch of a bucketing pass: a bucket that fills, then (every element in) the
        partial ones; None at the end; NOT_YET when the next element keeps the pass waiting."""
        bucketing = self.bucketing
        assert bucketing is not None and p.waiting is not None
        while not p.flushing:
            try:
                element = next(p.elements)
            except StopIteration:
                p.flushing = True
                break
            except Exception as exc:  # the elements end here; the partial batches still go, then the error
                p.error, p.flushing = exc, True
                break
            if element is STALL:
                return NOT_YET
            leaves = self._leaves(element)
            bucket = bucketing.bucket(leaves)
            p.waiting[bucket].append((p.position, leaves))
            p.position += 1
            if len(p.waiting[bucket]) == bucketing.batch_size:
                full, p.waiting[bucket] = p.waiting[bucket], []
                return [leaves for _, leaves in full]
        for bucket, rows in enumerate(p.waiting):
            if rows:
                p.waiting[bucket] = []
                if not bucketing.drop_remainder:
                    return [leaves for _, leaves in rows]
        return None

    def _encode_batch(self, p: _Pass, rows: list[list[Any]]) -> list[Any]:
        """A bucketing step's answer: the pass's state after it and one batch, each field padded to its longest."""
        bucketing = self.bucketing
        assert bucketing is not None
        members, fills = self._state(p)
        out: list[Any] = [np.int64(1), np.int64(p.position), members, fills]
        for column, spec, pad in zip(zip(*rows, strict=True), self.specs, bucketing.pads, strict=True):
            text = spec.dtype.name == "string"
            dtype = object if text else spec.dtype.as_numpy_dtype
            if spec.shape.rank == 1 and spec.shape[0] is None:  # token ids and the like: one masked copy
                lengths = np.fromiter(map(len, column), np.int64, len(column))
                batch = np.full((len(column), int(lengths.max(initial=0))), pad, dtype=dtype)
                batch[np.arange(batch.shape[1]) < lengths[:, None]] = np.concatenate(column)
            elif None in spec.shape.as_list():
                longest = np.max([leaf.shape for leaf in column], axis=0)
                batch = np.full((len(column), *longest), pad, dtype=dtype)
                for row, leaf in zip(batch, column, strict=True):
                    row[tuple(slice(0, n) for n in leaf.shape)] = leaf
            else:
                batch = np.stack([leaf.astype(dtype, copy=False) for leaf in column])
            out.append(batch)
        return out

    def _state(self, p: _Pass | None) -> tuple[np.ndarray, np.ndarray]:
        bucketing = self.bucketing
        assert bucketing is not None
        members = np.full((bucketing.buckets, bucketing.batch_size), -1, np.int64)
        fills = np.zeros(bucketing.buckets, np.int64)
        for bucket, positions in enumerate(p.members() if p is not None else []):
            members[bucket, : len(positions)] = positions
            fills[bucket] = len(positions)
        return members, fills

    def _leaves(self, element: Any) -> list[Any]:
        """The components of ``element``'s fields: a dense field's array; a ragged field's flat values and row
        splits; a sparse field's indices, values and dense shape."""
        if self.flat_tuple and type(element) is tuple and len(element) == len(self.specs):
            if all(type(leaf) is np.ndarray or isinstance(leaf, np.generic) for leaf in element):
                return [leaf if type(leaf) is np.ndarray else np.asarray(leaf) for leaf in element]
        elif self.bare and type(element) is np.ndarray:
            return [element]
        leaves = _nest.flatten(element)[0]
        if len(leaves) != len(self.specs):
            msg = (
                f"an element of {self.feed.name} has {len(leaves)} fields where the spec has {len(self.specs)}. "
                f"Received: {type(element).__name__}"
            )
            raise TfBridgeError(msg)
        out: list[Any] = []
        for leaf, spec in zip(leaves, self.specs, strict=True):
            text = spec.dtype.name == "string"
            if isinstance(leaf, RaggedParts):
                out.append(_text(leaf.flat_values) if text else leaf.flat_values)
                out.extend(np.asarray(splits, np.int64) for splits in leaf.nested_row_splits)
            elif isinstance(leaf, SparseParts):
                values = _text(leaf.values) if text else leaf.values
                out += [np.asarray(leaf.indices, np.int64), values, np.asarray(leaf.dense_shape, np.int64)]
            else:
                out.append(_text(_chunks.as_array(leaf)) if text else _chunks.as_array(leaf))
        return out

    def _encode(self, group: list[list[Any]]) -> list[Any]:
        if not self.feed.chunk:
            return [np.int64(1), *group[0]]
        out: list[Any] = [np.int64(len(group))]
        for column, spec in zip(zip(*group, strict=True), self.specs, strict=True):
            if None in spec.shape.as_list():  # packed: the values one after another, and each element's shape
                out.append(np.concatenate([leaf.reshape(-1) for leaf in column]))
                out.append(np.array([leaf.shape for leaf in column], np.int64).reshape(len(column), -1))
            else:
                out.append(_chunks.stack_column(column))
        return out

    def _not_yet(self, p: _Pass | None = None) -> list[Any]:
        """A step with nothing in it yet (count -2): TensorFlow asks again at the same place (a bucketing pass's
        state as ``p`` holds it now: the elements it took wait in their buckets)."""
        if self.bucketing is not None:
            assert p is not None
            members, fills = self._state(p)
            empty = [_placeholder(spec.dtype, [None, *spec.shape]) for spec in self.specs]
            return [np.int64(_NOT_YET_COUNT), np.int64(p.position), members, fills, *empty]
        parts = (_placeholder(dtype, shape) for dtype, shape in _components(self.specs, self.feed.chunk))
        return [np.int64(_NOT_YET_COUNT), *parts]

    def _empty(self, key: tuple[int, int] | None = None) -> list[Any]:
        """The answer that ends a pass: count -1 when the pass ``key`` has an error to raise, else 0."""
        with self.lock:
            count = np.int64(-1 if key is not None and key in self.failed else 0)
        if self.bucketing is not None:
            members, fills = self._state(None)
            empty = [_placeholder(spec.dtype, [None, *spec.shape]) for spec in self.specs]
            return [count, np.int64(-1), members, fills, *empty]
        return [count, *(_placeholder(dtype, shape) for dtype, shape in _components(self.specs, self.feed.chunk))]


NOT_YET = object()  # _next_batch: the next element keeps the pass waiting
_NOT_YET_COUNT = -2  # a step's count when it holds nothing yet (see Passes.fetch)


def _text(values: Any) -> np.ndarray:
    """Text as an object array (of str or bytes), which TensorFlow converts whole: numpy's fixed-width kinds
    would be encoded as ASCII (failing on other text) or lose trailing NUL bytes."""
    array = np.asarray(values)
    return array if array.dtype == object else np.asarray(values, dtype=object)


def _components(specs: list[Any], chunk: bool) -> list[tuple[Any, list[int | None]]]:
    """(dtype, shape) of each component of each field: what a step's numpy_function returns after the count. A
    chunk (dense fields only) stacks fields of one shape, and packs the others: their values one after another
    (1-D) and each element's shape."""
    import tensorflow as tf

    out: list[tuple[Any, list[int | None]]] = []
    for spec in specs:
        shape = spec.shape.as_list()
        if chunk:
            if None in shape:
                out += [(spec.dtype, [None]), (tf.int64, [None, len(shape)])]
            else:
                out.append((spec.dtype, [None, *shape]))
        elif isinstance(spec, tf.RaggedTensorSpec):
            rank = spec.ragged_rank
            out.append((spec.dtype, [None, *shape[rank + 1 :]]))
            out.append((tf.int64, [None if shape[0] is None else shape[0] + 1]))
            out.extend((tf.int64, [None]) for _ in range(rank - 1))
        elif isinstance(spec, tf.SparseTensorSpec):
            out += [(tf.int64, [None, len(shape)]), (spec.dtype, [None]), (tf.int64, [len(shape)])]
        else:
            out.append((spec.dtype, shape))
    return out


def _assemble(specs: list[Any], parts: list[Any]) -> list[Any]:
    """The fields of an element from their components (see :func:`_components`)."""
    import tensorflow as tf

    out: list[Any] = []
    at = 0
    for spec in specs:
        if isinstance(spec, tf.RaggedTensorSpec):
            rank = spec.ragged_rank
            flat, splits = parts[at], list(parts[at + 1 : at + 1 + rank])
            out.append(tf.RaggedTensor.from_nested_row_splits(flat, splits, validate=False))
            at += 1 + rank
        elif isinstance(spec, tf.SparseTensorSpec):
            sparse = tf.SparseTensor(parts[at], parts[at + 1], parts[at + 2])
            sparse.set_shape(spec.shape)
            out.append(sparse)
            at += 3
        else:
            out.append(parts[at])
            at += 1
    return out


def _graph_placeholder(dtype: Any, shape: list[int | None]) -> Any:
    """An empty answer made in the graph (a fill, not a constant as big as the field stored in it)."""
    import tensorflow as tf

    dims = [0 if d is None else d for d in shape]
    return tf.fill(dims, tf.constant(b"", tf.string)) if dtype == tf.string else tf.zeros(dims, dtype)


def _placeholder(dtype: Any, shape: list[int | None]) -> np.ndarray:
    sizes = tuple(0 if d is None else d for d in shape)
    if dtype.name == "string":
        return np.full(sizes, b"", dtype=object)
    return np.zeros(sizes, dtype.as_numpy_dtype)


class _Calls:
    """What the graph calls: the Python side of a dataset's passes, held weakly. TensorFlow keeps every function a
    traced ``numpy_function`` calls for as long as the process lives (it files them under the outermost graph, the
    global one when tracing eagerly), so these calls must not hold the passes: that would keep the executor, its
    worker threads and whatever they read ahead alive after the dataset is gone. The dataset holds the passes
    (:func:`attach`) and every iterator holds its dataset, so the passes live while anything can ask them."""

    def __init__(self, passes: Passes) -> None:
        self._passes = weakref.ref(passes)

    def _get(self) -> Passes:
        passes = self._passes()
        if passes is None:
            msg = (
                "the tfbridge dataset this pipeline reads is gone (garbage collected) while its pipeline still ran.\n"
                "Hint: keep a reference to the dataset tfbridge returned while you iterate over it or over a "
                "dataset built on it."
            )
            raise TfBridgeError(msg)
        return passes

    def next_pass(self) -> np.ndarray:
        return self._get().next_pass()

    def fetch(self, info: np.ndarray, position: np.ndarray) -> list[Any]:
        return self._get().fetch(info, position)

    def fetch_batch(self, info: np.ndarray, position: np.ndarray, members: np.ndarray, fills: np.ndarray) -> list[Any]:
        return self._get().fetch_batch(info, position, members, fills)

    def check(self, info: np.ndarray) -> np.ndarray:
        return self._get().check(info)


def positioned_dataset(passes: Passes, signature: Any) -> Any:
    """The tf.data pipeline over ``passes``: one pass per iterator, its position in tf.data's state. The functions
    it traces reach ``passes`` only through a weak reference (:class:`_Calls`)."""
    import tensorflow as tf

    specs = tf.nest.flatten(signature)
    chunk, bucketing = passes.feed.chunk, passes.bucketing
    calls = _Calls(passes)
    components = _components(specs, chunk)
    types = [tf.int64, *(dtype for dtype, _ in components)]
    packed = chunk and any(None in s.shape.as_list() for s in specs)

    def fetch(info: Any, position: Any) -> tuple[Any, Any]:
        def call() -> tuple[Any, Any]:
            out = tf.numpy_function(calls.fetch, [info, position], types, stateful=True)
            count = tf.ensure_shape(out[0], ())
            parts = [tf.ensure_shape(part, shape) for part, (_, shape) in zip(out[1:], components, strict=True)]
            after = tf.where(count < 0, tf.constant(-1, tf.int64), position + count)
            after = tf.where(tf.equal(count, _NOT_YET_COUNT), position, after)  # nothing yet: asked again there
            return after, (count, tuple(parts))

        def ended() -> tuple[Any, Any]:  # the pass ended with an error, already raised: no Python any more
            return position, (tf.constant(0, tf.int64), tuple(_graph_placeholder(d, s) for d, s in components))

        answer: tuple[Any, Any] = tf.cond(position < 0, ended, call)
        return answer

    def element(_: Any, parts: Any) -> Any:
        return tf.nest.pack_sequence_as(signature, _assemble(specs, list(parts)))

    def unpack(count: Any, parts: Any) -> Any:
        """The elements of a chunk with packed fields, one by one (sliced and reshaped in the graph)."""
        fields, at = [], 0
        for spec in specs:
            if None in spec.shape.as_list():
                values, shapes = parts[at], parts[at + 1]
                ends = tf.cumsum(tf.reduce_prod(shapes, axis=1))
                fields.append((spec, values, shapes, tf.concat([[0], ends], 0)))
                at += 2
            else:
                fields.append((spec, parts[at], None, None))
                at += 1

        def one(i: Any) -> Any:
            out = []
            for spec, values, shapes, offsets in fields:
                if shapes is None:
                    out.append(values[i])
                else:
                    flat = values[offsets[i] : offsets[i + 1]]
                    out.append(tf.ensure_shape(tf.reshape(flat, shapes[i]), spec.shape))
            return tf.nest.pack_sequence_as(signature, out)

        return tf.data.Dataset.range(count).map(one)

    def raised(steps: Any, info: Any) -> Any:
        """``steps`` up to the end of the pass, the error it ended with raised (count -1) after its elements.

        The step that ended the pass with an error set its position to -1; a step at -1 calls no Python. Once the
        error is raised, tf.data's read-ahead asks for the next step at once, and it is answered by TensorFlow
        alone: a Python call then could wait for the GIL while the thread that got the error drops the iterator
        holding it (a deadlock). Everything here is in the pass's own functions, made when the pass starts: a
        dataset appended for the end instead would make its functions when the pass ends (several ms)."""

        def going_on(count: Any, _: Any) -> Any:
            """Whether the pass goes on: count > 0 (elements) or -2 (nothing yet) yes, 0 (its end) no, -1 (ended
            with an error) asks Python, which raises the error there. A ``take_while`` passes the error on as it
            is (a ``map`` would put TensorFlow's own words before it)."""

            def ask() -> Any:
                return tf.ensure_shape(tf.numpy_function(calls.check, [info], tf.bool, stateful=True), ())

            return tf.cond(tf.equal(count, -1), ask, lambda: tf.not_equal(count, 0))

        # a step holding nothing yet (-2) goes on, and is left out before anything is made of it
        return steps.take_while(going_on).filter(lambda count, _: count > 0)

    def one_pass(info: Any) -> Any:
        steps = tf.data.Dataset.from_tensors(0).repeat().scan(info[3], lambda position, _: fetch(info, position))
        steps = raised(steps, info)
        if packed:
            elements = steps.flat_map(unpack)
        elif chunk:  # dense fields of one shape
            elements = steps.flat_map(lambda count, parts: tf.data.Dataset.from_tensor_slices(element(count, parts)))
        else:
            elements = steps.map(element)
        return elements

    def one_bucketed_pass(info: Any) -> Any:
        assert bucketing is not None
        rows = (bucketing.buckets, bucketing.batch_size)
        shapes = [[None, *spec.shape.as_list()] for spec in specs]
        size = bucketing.batch_size if bucketing.drop_remainder else None  # every batch delivered is whole
        types = [tf.int64, tf.int64, tf.int64, tf.int64, *(spec.dtype for spec in specs)]

        def step(state: Any, _: Any) -> tuple[Any, Any]:
            position, members, fills = state

            def call() -> tuple[Any, Any]:
                out = tf.numpy_function(calls.fetch_batch, [info, position, members, fills], types, stateful=True)
                count = tf.ensure_shape(out[0], ())
                after = (tf.ensure_shape(out[1], ()), tf.ensure_shape(out[2], rows), tf.ensure_shape(out[3], rows[:1]))
                parts = [tf.ensure_shape(part, shape) for part, shape in zip(out[4:], shapes, strict=True)]
                return after, (count, tuple(parts))

            def ended() -> tuple[Any, Any]:  # the pass ended with an error, already raised (see raised())
                empty = tuple(_graph_placeholder(spec.dtype, shape) for spec, shape in zip(specs, shapes, strict=True))
                return state, (tf.constant(0, tf.int64), empty)

            answer: tuple[Any, Any] = tf.cond(position < 0, ended, call)
            return answer

        start = (info[3], tf.fill(rows, tf.constant(-1, tf.int64)), tf.zeros(rows[:1], tf.int64))
        steps = raised(tf.data.Dataset.from_tensors(0).repeat().scan(start, step), info)

        def batch(_: Any, parts: Any) -> Any:
            whole = [tf.ensure_shape(part, [size, *shape[1:]]) for part, shape in zip(parts, shapes, strict=True)]
            return tf.nest.pack_sequence_as(signature, whole)

        return steps.map(batch)

    first = tf.data.Dataset.from_tensors(np.int64(0)).map(
        lambda _: tf.ensure_shape(tf.numpy_function(calls.next_pass, [], tf.int64, stateful=True), (4,))
    )
    ds = first.flat_map(one_pass if bucketing is None else one_bucketed_pass)
    options = tf.data.Options()
    # the Python steps are stateful; their state is the position tf.data holds, so a checkpoint may leave them out
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


_PASSES = "_tfbridge_passes"


def attach(dataset: Any, passes: Passes) -> None:
    """Record on ``dataset`` the Python side of its passes (the Keras callback finds it from a dataset built on
    it: see :func:`passes_in`)."""
    setattr(dataset, _PASSES, passes)


def passes_in(dataset: Any) -> list[Passes]:
    """The index-driven passes a dataset reads, looking through the steps built on them."""
    found: list[Passes] = []
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        ds = stack.pop()
        if id(ds) in seen:
            continue
        seen.add(id(ds))
        passes = getattr(ds, _PASSES, None)
        if isinstance(passes, Passes) and passes not in found:
            found.append(passes)
        inputs = getattr(ds, "_inputs", None)
        if callable(inputs):
            try:
                stack.extend(inputs())
            except Exception:  # a dataset kind that does not say its inputs: nothing to find there
                continue
    return found

"""Inference: merge sample elements into a Spec. Dimensions that differ become None; structure, rank or dtype
that differ raise SpecInferenceError naming the field and both samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tfbridge import _nest
from tfbridge._checks import short
from tfbridge._values import ValueProblem, describe
from tfbridge.errors import SpecInferenceError
from tfbridge.spec._model import Kind, Leaf, Spec, format_shape

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class Inference:
    """A spec and the shape history behind it: per field path, (element index, shape) of every sample."""

    spec: Spec
    shapes: dict[str, list[tuple[int, Shape]]] = field(default_factory=dict)


def infer_from_samples(samples: Sequence[tuple[int, Any]], batched: bool) -> Spec:
    """Merge the specs of sample elements ``[(index, element), ...]`` into one Spec."""
    return infer(samples, batched).spec


def infer(samples: Sequence[tuple[int, Any]], batched: bool) -> Inference:
    """The spec of ``samples`` with the shapes each sample had (the report shows what varies, and where)."""
    builder = SpecBuilder(batched)
    for index, element in samples:
        builder.add(index, element)
    return Inference(builder.spec(), dict(zip(builder.paths, builder.seen, strict=False)))


class SpecBuilder:
    """Merges elements one at a time into a spec; shared by the peek and by full scans.

    ``seen`` keeps every element's shapes per field (for a peek); ``changes`` keeps, per field and
    dimension, the first size seen and the first element where another size appeared (for a full scan).
    """

    def __init__(self, batched: bool, keep_shapes: bool = True) -> None:
        self.batched, self.keep_shapes = batched, keep_shapes
        self.first: Any = None
        self.first_index = 0
        self.treespec: Any = None
        self.paths: list[str] = []
        self.merged: list[Leaf] = []
        self.described_by: list[int] = []
        self.seen: list[list[tuple[int, Shape]]] = []
        self.changes: dict[str, dict[int, tuple[int, int | None, int, int | None]]] = {}
        self._first_shapes: list[Shape] = []
        self.ranges: dict[str, list[list[int | None]]] = {}  # per field and dimension: [smallest, largest] size
        self.count = 0

    def add(self, index: int, element: Any) -> list[Any]:
        """Merge one element; returns its leaf values in field order."""
        element = _nest.normalize(element)
        leaves, treespec = _nest.flatten(element)
        if self.first is None:
            if not leaves:
                msg = (
                    f"element {index} at x: holds no tensor, only empty tuples, lists or dicts. "
                    f"Received: {short(element)}\n"
                    "Hint: an element needs at least one array, tensor, number or string."
                )
                raise SpecInferenceError(msg, path="x")
            self.first, self.first_index, self.treespec = element, index, treespec
            raw_paths = _nest.flatten_with_paths(element)[0]
            self.paths = [_nest.format_path(p, element) for p in raw_paths]
            self.seen = [[] for _ in self.paths]
        elif treespec != self.treespec:
            where, a, b = _nest.structure_difference(self.first, element) or ((), "?", "?")
            path = _nest.format_path(where, self.first)
            msg = (
                f"samples disagree in structure at {path}: element {self.first_index} has {a}, "
                f"element {index} has {b}.\n"
                "Hint: every element of a source must have the same nesting of tuples, lists and dict keys."
            )
            raise SpecInferenceError(msg, path=path)
        batch_sizes: dict[str, int | None] = {}
        for k, value in enumerate(leaves):
            path = self.paths[k]
            leaf = _leaf_of(value, path, index, self.batched)
            if self.batched:
                batch_sizes[path] = leaf.shape[0]
            if self.keep_shapes:
                self.seen[k].append((index, leaf.shape))
            if k >= len(self.merged):
                self.merged.append(leaf)
                self.described_by.append(index)
                self._first_shapes.append(leaf.shape)
            else:
                self._note_change(path, k, index, leaf.shape)
                self.merged[k] = _merge(self.merged[k], leaf, path, self.described_by[k], index)
        _check_batch_sizes(batch_sizes, index)
        self.count += 1
        return leaves

    def _note_change(self, path: str, k: int, index: int, shape: Shape) -> None:
        ranges = self.ranges.setdefault(path, [[n, n] for n in self._first_shapes[k]])
        for d, n in enumerate(shape):
            low, high = ranges[d] if d < len(ranges) else (None, None)
            if n is not None and low is not None and high is not None:
                ranges[d][0], ranges[d][1] = min(low, n), max(high, n)
        first = self._first_shapes[k]
        for d, (a, b) in enumerate(zip(first, shape, strict=False)):
            if a != b and d not in self.changes.get(path, {}):
                self.changes.setdefault(path, {})[d] = (self.described_by[k], a, index, b)

    def spec(self) -> Spec:
        if self.first is None:
            msg = "the source is empty: there is no element to infer a spec from.\nHint: check the source yields data."
            raise SpecInferenceError(msg)
        final = [_finish(leaf, self.batched) for leaf in self.merged]
        return Spec(_nest.unflatten(self.treespec, final), self.batched)


def _finish(leaf: Leaf, batched: bool) -> Leaf:
    """Batch axis None for batched sources; float32 for a field only ever seen empty."""
    shape = (None, *leaf.shape[1:]) if batched else leaf.shape
    return replace(leaf, shape=shape, dtype=leaf.dtype or "float32")


def _leaf_of(value: Any, path: str, index: int, batched: bool) -> Leaf:
    try:
        d = describe(value)
    except ValueProblem as exc:
        msg = (
            f"element {index} at {path}: {exc}. Received: {short(value)}\n"
            "Hint: fields must be numpy arrays, tensors, Python numbers/strings or (nested) lists of them."
        )
        raise SpecInferenceError(msg, path=path) from None
    if batched and not d.shape:
        msg = (
            f"element {index} at {path}: a batched source needs a batch axis on every field, "
            f"but this field is a scalar. Received: {short(value)}\n"
            "Hint: pass batched=False if each element is a single example."
        )
        raise SpecInferenceError(msg, path=path)
    return Leaf(d.shape, d.dtype or "", d.kind, d.ragged_rank)


def _check_batch_sizes(batch_sizes: dict[str, int | None], index: int) -> None:
    known = {p: n for p, n in batch_sizes.items() if n is not None}
    if len(set(known.values())) > 1:
        listing = ", ".join(f"{p}: {n}" for p, n in known.items())
        msg = (
            f"element {index}: the fields of one batch have different batch sizes ({listing}).\n"
            "Hint: every field of a batch needs the same leading dimension; "
            "pass batched=False if elements are single examples."
        )
        raise SpecInferenceError(msg)


def _merge(a: Leaf, b: Leaf, path: str, ia: int, ib: int) -> Leaf:
    kinds = {a.kind, b.kind}
    if "sparse" in kinds and len(kinds) > 1:
        msg = (
            f"samples disagree at {path}: element {ia} is {a.kind}, element {ib} is {b.kind}.\n"
            "Hint: a field must be sparse in every element or in none."
        )
        raise SpecInferenceError(msg, path=path)
    if a.rank != b.rank:
        msg = (
            f"samples disagree in rank at {path}: element {ia} has shape {format_shape(a.shape)} (rank {a.rank}), "
            f"element {ib} has shape {format_shape(b.shape)} (rank {b.rank}).\n"
            "Hint: a field must have the same number of dimensions in every element "
            "(e.g. add the channel axis to grayscale images)."
        )
        raise SpecInferenceError(msg, path=path)
    dtype = a.dtype or b.dtype
    if a.dtype and b.dtype and a.dtype != b.dtype:
        msg = (
            f"samples disagree in dtype at {path}: element {ia} is {a.dtype}, element {ib} is {b.dtype}.\n"
            "Hint: make the source yield one dtype for this field (e.g. .astype(np.float32)), "
            "or pass spec= to convert every element to the dtypes you want."
        )
        raise SpecInferenceError(msg, path=path)
    shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape, strict=False))
    kind: Kind = "ragged" if "ragged" in kinds else a.kind
    return Leaf(shape, dtype, kind, max(a.ragged_rank, b.ragged_rank))

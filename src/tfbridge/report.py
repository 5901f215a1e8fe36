"""inspect: what a source holds and what tfbridge will make of it, as text, JSON or an HTML page.

Statistics come from the peeked elements, or from every element with ``full=True`` (which also reports any
dimension the peek got wrong, with the first element that shows it). The JSON keys are stable; see
docs/REPORT.md.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tfbridge import _moments, pipeline
from tfbridge._checks import check_int
from tfbridge._reservoir import Reservoir
from tfbridge._values import STRING, ValueProblem, describe
from tfbridge.batching import bucket_boundaries
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label
from tfbridge.spec import CastFloats, Leaf, Spec, SpecBuilder, apply_float_policy, format_shape
from tfbridge.validate import ragged_parts

SCHEMA_VERSION = 1
_PRIVATE_MODULE = "_tfbridge_target_"  # the CLI loads FILE.py under this prefix when its own name is taken
_MAX_DISTINCT = 20  # value counts of an integer, bool or string field
_MAX_CLASSES = 1000  # ... holding one value per example (a label: its class balance)
_HISTOGRAM_BINS = 30
_SAMPLE = 20_000  # values per field kept for its histogram
_IMAGES = 8  # images kept per image-shaped field
_IMAGES_PER_ELEMENT = 2  # rows of one batch among them
_MIN_IMAGE_SIDE = 8


@dataclass
class FieldStats:
    """Streaming statistics of one field over the elements scanned (float64, exact merge), a uniform sample of its
    values for the histogram, where the first NaN and Inf are, and a few images of an image-shaped field."""

    count: int = 0
    nan: int = 0
    inf: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    integer: bool = True  # every value seen is an integer (bins of whole numbers)
    distinct: Counter[Any] | None = field(default_factory=Counter)
    string_lengths: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # one per example (row of a batch), along the first varying dim
    sample: Reservoir = field(default_factory=lambda: Reservoir(_SAMPLE))
    first_nan: dict[str, Any] | None = None
    first_inf: dict[str, Any] | None = None
    images: list[Image] = field(default_factory=list)

    def add(self, value: Any, leaf: Leaf, batched: bool, element: int = 0) -> None:
        try:
            d = describe(value)
        except ValueProblem:
            return
        locate: Callable[[int], tuple[int, ...]]
        if d.kind == "ragged":
            flat, splits = ragged_parts(d.value, d.ragged_rank)
            if splits:
                row_lengths = np.diff(splits[0]) if batched else [len(splits[0]) - 1]
                self.lengths.extend(int(n) for n in row_lengths)
            arr = np.asarray(flat)
            locate = partial(_ragged_index, shape=arr.shape, splits=splits)
        elif d.kind == "sparse":
            arr = np.asarray(d.value.values if hasattr(d.value, "values") else d.value.data)
            if hasattr(arr, "numpy"):
                arr = arr.numpy()
            locate = partial(_sparse_index, d.value)
        else:
            arr = np.asarray(d.value)
            varying = [i for i, n in enumerate(leaf.shape) if n is None and not (batched and i == 0)]
            if varying and arr.ndim > varying[0]:  # every row of a batch counts, at the batch's size
                self.lengths.extend([int(arr.shape[varying[0]])] * (int(arr.shape[0]) if batched else 1))
            if _is_image(leaf, batched) and len(self.images) < _IMAGES:
                self._images(arr, batched, element)
            locate = partial(_dense_index, shape=arr.shape)
        one_per_example = len(leaf.shape) == (1 if batched else 0)
        limit = _MAX_CLASSES if one_per_example else _MAX_DISTINCT
        if leaf.dtype == STRING:
            strings = arr.ravel()
            lengths = [len(v.encode() if isinstance(v, str) else v) for v in strings]
            self.string_lengths.extend(lengths)
            self.sample.add(np.asarray(lengths, np.float64))
            if self.distinct is not None:
                self._distinct(Counter(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                                       for v in strings), limit)  # fmt: skip
            self.count += arr.size
            return
        self._numbers(arr, limit, lambda k: self._where(k, locate, batched, element))

    def _images(self, arr: np.ndarray, batched: bool, element: int) -> None:
        rows = range(min(_IMAGES_PER_ELEMENT, arr.shape[0])) if batched else [None]
        for row in rows:
            if len(self.images) < _IMAGES:
                self.images.append(Image(element, row, np.array(arr if row is None else arr[row])))

    @staticmethod
    def _where(k: int, locate: Callable[[int], tuple[int, ...]], batched: bool, element: int) -> dict[str, Any]:
        index = [int(i) for i in locate(k)]
        return {"element": element, "row": index[0] if batched and index else None, "index": index}

    def _distinct(self, counts: Counter[Any], limit: int) -> None:
        if self.distinct is None:
            return
        self.distinct.update(counts)
        if len(self.distinct) > limit:
            self.distinct = None

    def _numbers(self, arr: np.ndarray, limit: int, where: Callable[[int], dict[str, Any]]) -> None:
        if arr.size == 0:
            return
        if arr.dtype.kind in "biu":
            if self.distinct is not None:
                values, counts = np.unique(arr, return_counts=True)
                self._distinct(Counter(dict(zip(values.tolist(), counts.tolist(), strict=False))), limit)
        else:
            self.distinct = None
            self.integer = False
        x = arr.astype(np.float64).ravel() if arr.dtype.kind != "c" else np.abs(arr).astype(np.float64).ravel()
        nan, inf = np.isnan(x), np.isinf(x)
        n_nan, n_inf = int(nan.sum()), int(inf.sum())
        self.nan += n_nan
        self.inf += n_inf
        if n_nan and self.first_nan is None:
            self.first_nan = where(int(np.argmax(nan)))
        if n_inf and self.first_inf is None:
            self.first_inf = where(int(np.argmax(inf)))
        if n_nan or n_inf:
            x = x[~(nan | inf)]
        if x.size == 0:
            return
        self.sample.add(x)
        lo, hi = float(x.min()), float(x.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        mean_b = float(x.mean())
        self.count, self.mean, self.m2 = _moments.merge(
            self.count, self.mean, self.m2, x.size, mean_b, float(((x - mean_b) ** 2).sum())
        )

    def to_dict(self, batch_size: int, buckets: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "nan": self.nan,
            "inf": self.inf,
            "min": self.min,
            "max": self.max,
            "mean": self.mean if self.count and self.min is not None else None,
            "std": float(np.sqrt(self.m2 / self.count)) if self.count and self.min is not None else None,
            "distinct": {str(k): v for k, v in sorted(self.distinct.items())} if self.distinct else None,
            "string_length": None,
            "histogram": None,
            "first_nan": self.first_nan,
            "first_inf": self.first_inf,
        }
        if self.string_lengths:
            s = np.asarray(self.string_lengths)
            out.update(min=None, max=None, mean=None, std=None)
            out["string_length"] = {"min": int(s.min()), "max": int(s.max()), "mean": float(s.mean())}
            out["histogram"] = _histogram(self.sample, int(s.min()), int(s.max()), integer=True)
        elif self.min is not None and self.max is not None:
            out["histogram"] = _histogram(self.sample, self.min, self.max, integer=self.integer)
        return out


@dataclass
class Image:
    """One image of an image-shaped field, for the HTML report: the element and the row of its batch."""

    element: int
    row: int | None
    pixels: np.ndarray


def _is_image(leaf: Leaf, batched: bool) -> bool:
    """Height x width x 1, 3 or 4 channels per example, numeric, at least 8 pixels a side where known."""
    shape = leaf.shape[1:] if batched else leaf.shape
    return (
        leaf.kind == "dense"
        and leaf.dtype not in (STRING, "bool")
        and len(shape) == 3
        and shape[2] in (1, 3, 4)
        and all(n is None or n >= _MIN_IMAGE_SIDE for n in shape[:2])
    )


def _histogram(sample: Reservoir, low: float, high: float, integer: bool) -> dict[str, Any] | None:
    """Counts over the sampled values, between the exact minimum and maximum; whole-number bins for integers
    when they fit."""
    if not sample.values.size:
        return None
    if integer and high - low < _HISTOGRAM_BINS:
        bins: Any = np.arange(low, high + 2) - 0.5
    elif high > low:
        bins = np.linspace(low, high, _HISTOGRAM_BINS + 1)
    else:
        bins = np.asarray([low - 0.5, low + 0.5])
    counts, edges = np.histogram(sample.values, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "sampled": int(sample.values.size),
            "of": sample.seen}  # fmt: skip


def _dense_index(k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(k, shape)) if shape else ()


def _ragged_index(k: int, shape: tuple[int, ...], splits: list[np.ndarray]) -> tuple[int, ...]:
    """The index of the ``k``-th flat value in the ragged value: row splits are walked from the innermost."""
    flat = _dense_index(k, shape)
    if not flat:
        return ()
    row, offsets = flat[0], []
    for s in reversed(splits):
        outer = int(np.searchsorted(s, row, side="right")) - 1
        offsets.append(row - int(s[outer]))
        row = outer
    return (row, *reversed(offsets), *flat[1:])


def _sparse_index(value: Any, k: int) -> tuple[int, ...]:
    """The dense index of the ``k``-th stored value of a tf.SparseTensor or scipy.sparse COO matrix."""
    if hasattr(value, "indices"):
        indices = value.indices
        return tuple(int(i) for i in np.asarray(indices.numpy() if hasattr(indices, "numpy") else indices)[k])
    return int(value.row[k]), int(value.col[k])


def padding(lengths: np.ndarray, batch_size: int, buckets: int) -> dict[str, Any]:
    """Padded / real elements in stream order: plain per-batch padding, and with bucketing."""
    real = int(lengths.sum())
    plain = sum(int(chunk.max()) * len(chunk) for chunk in _chunks(lengths, batch_size))
    bounds = bucket_boundaries(lengths, buckets)
    ids = np.searchsorted(np.asarray(bounds), lengths, side="right")
    bucketed = 0
    for b in np.unique(ids):
        for chunk in _chunks(lengths[ids == b], batch_size):
            bucketed += int(chunk.max()) * len(chunk)
    return {
        "batch_size": batch_size,
        "plain": plain / max(real, 1),
        "buckets": buckets,
        "boundaries": bounds,
        "bucketed": bucketed / max(real, 1),
    }


def padding_text(pad: dict[str, Any]) -> str:
    """``padding to batch max: 68% of values; with 8 buckets: 9%`` from a ``padding`` entry of the report."""
    return (
        f"padding to batch max (batches of {pad['batch_size']}): {_padding_share(pad['plain']):.0%} of values; "
        f"with {pad['buckets']} buckets: {_padding_share(pad['bucketed']):.0%}"
    )


def _padding_share(padded_per_real: float) -> float:
    return 1 - 1 / padded_per_real if padded_per_real else 0.0


def _chunks(x: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), n):
        yield x[i : i + n]


@dataclass
class FieldReport:
    path: str
    kind: str
    dtype: str  # in the data
    delivered_dtype: str  # after the float policy
    shape: tuple[int | None, ...]
    varying: list[dict[str, Any]]  # [{"dim", "min", "max", "sizes": [[element, size], ...]}]
    stats: dict[str, Any]
    lengths: dict[str, Any] | None
    images: list[Image] = field(default_factory=list)  # a few, for the HTML report (not in the JSON)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "dtype": self.dtype,
            "delivered_dtype": self.delivered_dtype,
            "shape": list(self.shape),
            "varying": self.varying,
            "stats": self.stats,
            "lengths": self.lengths,
        }


@dataclass
class Report:
    source: str
    kind: str
    spec: Spec
    delivered: Spec
    executor: dict[str, Any]
    fields: list[FieldReport]
    scanned: dict[str, Any]
    peek_missed: list[dict[str, Any]]
    name: str  # as the user named the source (the CLI's TARGET), else its type without a private module

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "source": self.source,
            "kind": self.kind,
            "batched": self.spec.batched,
            "scanned": self.scanned,
            "executor": self.executor,
            "fields": [f.to_dict() for f in self.fields],
            "peek_missed": self.peek_missed,
            "spec": json.loads(self.spec.to_json()),
            "delivered_spec": json.loads(self.delivered.to_json()),
            "name": self.name,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self, path: str | Path) -> Path:
        """A self-contained HTML page (plots embedded); needs matplotlib (``pip install "tfbridge[report]"``)."""
        from tfbridge._report_html import render

        out = Path(path)
        out.write_text(render(self), encoding="utf-8")
        return out

    def notes(self) -> list[str]:
        """One line per finding: float casts, varying dimensions, values, lengths and padding, peek misses."""
        notes: list[str] = []
        for f in self.fields:
            if f.dtype != f.delivered_dtype:
                notes.append(
                    f"{f.path}: {f.dtype} in the data, delivered as {f.delivered_dtype} "
                    "(cast_floats='floatx'; pass cast_floats=None to keep it)"
                )
            for v in f.varying:
                sizes = ", ".join(f"{size} at element {el}" for el, size in v["sizes"][:8])
                more = f", ... ({len(v['sizes'])} elements)" if len(v["sizes"]) > 8 else ""
                what = "batch size" if self.spec.batched and v["dim"] == 0 else f"dim {v['dim']}"
                notes.append(f"{f.path}: {what} varies from {v['min']} to {v['max']} ({sizes}{more}) -> None")
            distinct = f.stats.get("distinct")
            if distinct and len(distinct) <= _MAX_DISTINCT:
                notes.append(f"{f.path}: values {distinct}")
            elif distinct:
                counts = distinct.values()
                notes.append(f"{f.path}: {len(distinct)} values, {min(counts)} to {max(counts)} of each")
            if f.stats.get("string_length"):
                sl = f.stats["string_length"]
                notes.append(f"{f.path}: strings of {sl['min']} to {sl['max']} bytes (mean {sl['mean']:.1f})")
            if f.lengths:
                ln, pad = f.lengths, f.lengths.get("padding")
                rows = "rows of the batches" if self.spec.batched else "examples"
                text = f"{f.path}: lengths {ln['min']} to {ln['max']} (median {ln['median']:g}, {ln['count']} {rows})"
                if pad:
                    text += f"; {padding_text(pad)} (tb.pad_batch(..., buckets={pad['boundaries']}))"
                notes.append(text)
        for miss in self.peek_missed:
            notes.append(
                f"{miss['path']}: the peek saw dim {miss['dim']} = {miss['peek_size']}, but element "
                f"{miss['element']} has {miss['size']}: the full spec makes it None"
            )
        return notes

    def warnings(self) -> list[str]:
        """One line per field holding NaN or Inf values: how many, and where the first one is."""
        elements = self.scanned["elements"]
        scope = f"in all {elements} elements" if self.scanned["full"] else f"in the {elements} elements sampled"
        lines = []
        for f in self.fields:
            for what, key in (("NaN", "nan"), ("Inf", "inf")):
                n, first = f.stats[key], f.stats.get(f"first_{key}")
                if not n:
                    continue
                text = f"{f.path} holds {n} {what} value{'s' if n > 1 else ''} ({scope})"
                if first:
                    text += f"; the first is in element {first['element']}"
                    if first["index"]:
                        text += f" at {f.path}[{', '.join(map(str, first['index']))}]"
                    if first["row"] is not None:
                        text += f", row {first['row']} of the batch"
                lines.append(text)
        return lines

    def __str__(self) -> str:
        scope = "every element" if self.scanned["full"] else f"{self.scanned['elements']} sampled elements"
        what = f"{self.kind}, {'batched' if self.spec.batched else 'one example per element'}"
        if self.name != self.source:
            what = f"{self.source}; {what}"
        lines = [
            f"source:   {self.name} ({what})",
            f"executor: {self.executor['name']}"
            + (f" x{self.executor['workers']}" if self.executor["workers"] > 1 else "")
            + f" - {self.executor['reason']}",
            f"scanned:  {scope} ({self.scanned['elements']})",
            "",
        ]
        warnings = self.warnings()
        if warnings:
            lines += [*(f"WARNING: {w}" for w in warnings), ""]
        rows = [("field", "dtype", "shape", "kind", "min", "max", "mean", "std", "nan/inf")]
        for f in self.fields:
            dtype = f.dtype if f.dtype == f.delivered_dtype else f"{f.dtype} -> {f.delivered_dtype}"
            s = f.stats
            rows.append(
                (
                    f.path,
                    dtype,
                    format_shape(f.shape),
                    f.kind,
                    _num(s["min"]),
                    _num(s["max"]),
                    _num(s["mean"]),
                    _num(s["std"]),
                    f"{s['nan']}/{s['inf']}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
        notes = self.notes()
        if notes:
            lines += ["", *notes]
        return "\n".join(lines)


def _num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def inspect(
    source: Any,
    *,
    peek: int = 8,
    batched: bool | None = None,
    label: Label | None = None,
    cast_floats: CastFloats = "floatx",
    full: bool = False,
    batch_size: int = 32,
    buckets: int = 8,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    name: str | None = None,
) -> Report:
    """Spec, dtypes as delivered, what varies (and where), per-field statistics, length histograms with the
    padding plain batching and bucketing would cost, and the executor ``auto`` picks.

    ``full=True`` scans every element (statistics over all of them) and reports each dimension the peek got
    wrong with the first element that shows it; ``executor``/``workers`` say who produces the elements of a
    Python source for that scan (as for ``to_dataset``). ``label`` splits label columns off first. ``name`` is how
    the report names the source (default: its class or function name).
    """
    check_int("batch_size", batch_size)
    check_int("buckets", buckets)
    p = pipeline.plan(source, peek=peek, batched=batched, label=label, executor=executor, workers=workers,
                      cast_floats=None)  # fmt: skip
    src = p.source
    samples = p.peek.samples if p.peek is not None else src.peek(peek).samples
    builder = SpecBuilder(src.batched, keep_shapes=not full)
    stats: list[FieldStats] = []
    spec_leaves: list[Leaf] = []
    for i, element in _scan(p) if full else samples:
        values = builder.add(i, element)
        if not stats:
            stats = [FieldStats() for _ in values]
            spec_leaves = [leaf for _, leaf in p.spec.fields()]
        for st, value, leaf in zip(stats, values, spec_leaves, strict=False):
            st.add(value, leaf, src.batched, i)
    scanned_spec = builder.spec()
    spec = scanned_spec if full else p.spec
    delivered = apply_float_policy(spec, cast_floats)
    delivered_leaves = dict(delivered.fields())
    peek_missed = _peek_missed(p.spec, scanned_spec, builder) if full else []
    shapes = p.inference.shapes if p.inference.shapes else dict(zip(builder.paths, builder.seen, strict=False))
    fields = []
    for k, (path, leaf) in enumerate(spec.fields()):
        st = stats[k] if stats else FieldStats()
        fields.append(
            FieldReport(
                path,
                leaf.kind,
                leaf.dtype,
                delivered_leaves[path].dtype,
                leaf.shape,
                _varying(
                    leaf,
                    shapes.get(path, []) if not full else [],
                    builder.changes.get(path, {}),
                    builder.ranges.get(path, []),
                ),
                st.to_dict(batch_size, buckets),
                _lengths(st.lengths, batch_size, buckets),
                st.images,
            )
        )
    executor_info = {"name": p.choice.name, "workers": p.choice.workers, "reason": p.choice.reason}
    scanned = {"full": full, "elements": builder.count}
    source_type = _without_module(src.name, (_PRIVATE_MODULE,))
    return Report(source_type, _kind(src), spec, delivered, executor_info, fields, scanned, peek_missed,
                  name or _without_module(source_type, ("__main__",)))  # fmt: skip


def _without_module(source_type: str, modules: tuple[str, ...]) -> str:
    """``module.Class`` without a module the user never wrote (``__main__``, the CLI's private module)."""
    module, _, rest = source_type.partition(".")
    return rest if rest and module.startswith(modules) else source_type


def _kind(src: Any) -> str:
    """The report's ``kind``: native (tf.data runs it), indexed (read by index) or stream (read in order)."""
    if src.native_route is not None and not src.random_access:
        return "native"
    return "indexed" if src.random_access else "stream"


def _scan(p: pipeline.Plan) -> Iterator[tuple[int, Any]]:
    """Every element of the source, in order, as the source gives it (a Python source through its executor)."""
    runner = pipeline.make_runner(p)
    try:
        yield from enumerate(p.source.scan(runner))
    finally:
        if runner is not None:
            runner.close()


def _varying(
    leaf: Leaf,
    seen: list[tuple[int, tuple[int | None, ...]]],
    changes: dict[int, Any],
    ranges: list[list[int | None]],
) -> list[dict[str, Any]]:
    """Dimensions that vary: sizes per sampled element (peek), or first change and range (full scan)."""
    out = []
    for d, size in enumerate(leaf.shape):
        if size is not None:
            continue
        sizes = [[el, shape[d]] for el, shape in seen if d < len(shape) and shape[d] is not None]
        if not sizes and d in changes:
            first_el, first_size, el, other = changes[d]
            sizes = [[first_el, first_size], [el, other]]
        values: set[int] = {s for _, s in sizes if s is not None}
        if len(values) > 1:
            low, high = ranges[d] if d < len(ranges) and ranges[d][0] is not None else (min(values), max(values))
            out.append({"dim": d, "min": low, "max": high, "sizes": sizes})
    return out


def _lengths(lengths: list[int], batch_size: int, buckets: int) -> dict[str, Any] | None:
    if not lengths:
        return None
    arr = np.asarray(lengths, dtype=np.int64)
    counts, edges = np.histogram(arr, bins=min(_HISTOGRAM_BINS, max(1, len(np.unique(arr)))))
    out: dict[str, Any] = {
        "count": int(arr.size),
        "min": int(arr.min()),
        "max": int(arr.max()),
        "median": float(np.median(arr)),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "padding": padding(arr, batch_size, buckets) if arr.min() != arr.max() else None,
    }
    return out


def _peek_missed(peeked: Spec, scanned: Spec, builder: SpecBuilder) -> list[dict[str, Any]]:
    missed = []
    scanned_leaves = dict(scanned.fields())
    for path, leaf in peeked.fields():
        full_leaf = scanned_leaves[path]
        for d, (a, b) in enumerate(zip(leaf.shape, full_leaf.shape, strict=False)):
            if a is not None and b is None:
                _, _, el, other = builder.changes[path][d]
                missed.append({"path": path, "dim": d, "peek_size": a, "element": el, "size": other})
    return missed

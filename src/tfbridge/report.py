"""inspect: what a source holds and what tfbridge will make of it, as text, JSON or an HTML page.

Statistics come from the peeked elements, or from every element with ``full=True`` (which also reports any
dimension the peek got wrong, with the first element that shows it). The JSON keys are stable; see
docs/REPORT.md.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfbridge import _moments, pipeline
from tfbridge._checks import check_int
from tfbridge._values import STRING, ValueProblem, describe
from tfbridge.batching import bucket_boundaries
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label
from tfbridge.spec import CastFloats, Leaf, Spec, SpecBuilder, apply_float_policy, format_shape
from tfbridge.validate import ragged_parts

SCHEMA_VERSION = 1
_MAX_DISTINCT = 20
_HISTOGRAM_BINS = 30


@dataclass
class FieldStats:
    """Streaming statistics of one field over the elements scanned (float64, exact merge)."""

    count: int = 0
    nan: int = 0
    inf: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    distinct: Counter[Any] | None = field(default_factory=Counter)
    string_lengths: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # one per example, along the first varying dimension

    def add(self, value: Any, leaf: Leaf, batched: bool) -> None:
        try:
            d = describe(value)
        except ValueProblem:
            return
        if d.kind == "ragged":
            flat, splits = ragged_parts(d.value, d.ragged_rank)
            if splits:
                row_lengths = np.diff(splits[0]) if batched else [len(splits[0]) - 1]
                self.lengths.extend(int(n) for n in row_lengths)
            arr = np.asarray(flat)
        elif d.kind == "sparse":
            arr = np.asarray(d.value.values if hasattr(d.value, "values") else d.value.data)
            if hasattr(arr, "numpy"):
                arr = arr.numpy()
        else:
            arr = np.asarray(d.value)
            varying = [i for i, n in enumerate(leaf.shape) if n is None and not (batched and i == 0)]
            if varying and not batched:
                self.lengths.append(int(arr.shape[varying[0]]))
        if leaf.dtype == STRING:
            self.string_lengths.extend(len(v.encode() if isinstance(v, str) else v) for v in arr.ravel())
            self.count += arr.size
            return
        self._numbers(arr)

    def _numbers(self, arr: np.ndarray) -> None:
        if arr.size == 0:
            return
        if arr.dtype.kind in "biu" and self.distinct is not None:
            values, counts = np.unique(arr, return_counts=True)
            self.distinct.update(dict(zip(values.tolist(), counts.tolist(), strict=False)))
            if len(self.distinct) > _MAX_DISTINCT:
                self.distinct = None
        elif arr.dtype.kind not in "biu":
            self.distinct = None
        x = arr.astype(np.float64).ravel() if arr.dtype.kind != "c" else np.abs(arr).astype(np.float64).ravel()
        nan, inf = np.isnan(x), np.isinf(x)
        self.nan += int(nan.sum())
        self.inf += int(inf.sum())
        x = x[~(nan | inf)]
        if x.size == 0:
            return
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
        }
        if self.string_lengths:
            s = np.asarray(self.string_lengths)
            out.update(min=None, max=None, mean=None, std=None, distinct=None)
            out["string_length"] = {"min": int(s.min()), "max": int(s.max()), "mean": float(s.mean())}
        return out


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
            if f.stats.get("distinct"):
                notes.append(f"{f.path}: values {f.stats['distinct']}")
            if f.stats.get("string_length"):
                sl = f.stats["string_length"]
                notes.append(f"{f.path}: strings of {sl['min']} to {sl['max']} bytes (mean {sl['mean']:.1f})")
            if f.lengths:
                ln, pad = f.lengths, f.lengths.get("padding")
                text = f"{f.path}: lengths {ln['min']} to {ln['max']} (median {ln['median']:g}, {ln['count']} examples)"
                if pad:
                    text += (
                        f"; padded/real with batches of {pad['batch_size']}: plain {pad['plain']:.2f}, "
                        f"{pad['buckets']} buckets {pad['bucketed']:.2f} "
                        f"(tb.pad_batch(..., buckets={pad['boundaries']}))"
                    )
                notes.append(text)
        for miss in self.peek_missed:
            notes.append(
                f"{miss['path']}: the peek saw dim {miss['dim']} = {miss['peek_size']}, but element "
                f"{miss['element']} has {miss['size']}: the full spec makes it None"
            )
        return notes

    def __str__(self) -> str:
        scope = "every element" if self.scanned["full"] else f"{self.scanned['elements']} sampled elements"
        lines = [
            f"source:   {self.source} ({self.kind}, {'batched' if self.spec.batched else 'one example per element'})",
            f"executor: {self.executor['name']}"
            + (f" x{self.executor['workers']}" if self.executor["workers"] > 1 else "")
            + f" - {self.executor['reason']}",
            f"scanned:  {scope} ({self.scanned['elements']})",
            "",
        ]
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
) -> Report:
    """Spec, dtypes as delivered, what varies (and where), per-field statistics, length histograms with the
    padding plain batching and bucketing would cost, and the executor ``auto`` picks.

    ``full=True`` scans every element (statistics over all of them) and reports each dimension the peek got
    wrong with the first element that shows it; ``executor``/``workers`` say who produces the elements of a
    Python source for that scan (as for ``to_dataset``). ``label`` splits label columns off first.
    """
    check_int("batch_size", batch_size)
    check_int("buckets", buckets)
    p = pipeline.plan(source, peek=peek, batched=batched, label=label, executor=executor, workers=workers,
                      cast_floats=None)  # fmt: skip
    src = p.source
    samples = p.peek.samples if p.peek is not None else src.peek(peek).samples
    builder = SpecBuilder(src.batched, keep_shapes=not full)
    leaves_of = (builder.add(i, e) for i, e in (_scan(p) if full else samples))
    stats: list[FieldStats] = []
    spec_leaves: list[Leaf] = []
    for values in leaves_of:
        if not stats:
            stats = [FieldStats() for _ in values]
            spec_leaves = [leaf for _, leaf in p.spec.fields()]
        for st, value, leaf in zip(stats, values, spec_leaves, strict=False):
            st.add(value, leaf, src.batched)
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
            )
        )
    executor_info = {"name": p.choice.name, "workers": p.choice.workers, "reason": p.choice.reason}
    scanned = {"full": full, "elements": builder.count}
    return Report(src.name, _kind(src), spec, delivered, executor_info, fields, scanned, peek_missed)


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

"""inspect: what a source holds and what tfbridge will make of it, as text or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tfbridge import pipeline
from tfbridge.spec import CastFloats, Spec, apply_float_policy, format_shape

# JSON report keys (stable): source, kind, batched, executor{name, workers, reason}, fields[...], spec, delivered_spec
_SCHEMA_VERSION = 1


@dataclass
class FieldReport:
    path: str
    kind: str
    dtype: str  # in the data
    delivered_dtype: str  # after the float policy
    shape: tuple[int | None, ...]
    varying: list[dict[str, Any]]  # [{"dim": d, "sizes": [[element, size], ...]}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "dtype": self.dtype,
            "delivered_dtype": self.delivered_dtype,
            "shape": list(self.shape),
            "varying": self.varying,
        }


@dataclass
class Report:
    source: str
    kind: str
    spec: Spec
    delivered: Spec
    executor: dict[str, Any]
    fields: list[FieldReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _SCHEMA_VERSION,
            "source": self.source,
            "kind": self.kind,
            "batched": self.spec.batched,
            "executor": self.executor,
            "fields": [f.to_dict() for f in self.fields],
            "spec": json.loads(self.spec.to_json()),
            "delivered_spec": json.loads(self.delivered.to_json()),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = [
            f"source:   {self.source} ({self.kind}, {'batched' if self.spec.batched else 'one example per element'})",
            f"executor: {self.executor['name']}"
            + (f" x{self.executor['workers']}" if self.executor["workers"] > 1 else "")
            + f" - {self.executor['reason']}",
            "",
        ]
        rows = [("field", "dtype", "shape", "kind")]
        for f in self.fields:
            dtype = f.dtype if f.dtype == f.delivered_dtype else f"{f.dtype} -> {f.delivered_dtype}"
            rows.append((f.path, dtype, format_shape(f.shape), f.kind))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        notes = []
        for f in self.fields:
            if f.dtype != f.delivered_dtype:
                notes.append(
                    f"{f.path}: {f.dtype} in the data, delivered as {f.delivered_dtype} "
                    "(cast_floats='floatx'; pass cast_floats=None to keep it)"
                )
            for v in f.varying:
                sizes = ", ".join(f"{size} at element {el}" for el, size in v["sizes"])
                what = "batch size" if self.spec.batched and v["dim"] == 0 else f"dim {v['dim']}"
                notes.append(f"{f.path}: {what} varies ({sizes}) -> None")
        if notes:
            lines += ["", *notes]
        return "\n".join(lines)


def inspect(
    source: Any, *, peek: int = 8, batched: bool | None = None, cast_floats: CastFloats = "floatx"
) -> Report:
    """Spec, dtypes as delivered, dimensions that vary (and in which sampled elements), executor choice."""
    p = pipeline.plan(source, peek=peek, batched=batched, cast_floats=None)
    delivered = apply_float_policy(p.spec, cast_floats)
    fields = []
    delivered_leaves = dict(delivered.fields())
    for path, leaf in p.spec.fields():
        seen = p.spec.samples.get(path, [])
        varying = []
        for d, size in enumerate(leaf.shape):
            if size is None and seen:
                sizes = [[el, shape[d]] for el, shape in seen if d < len(shape)]
                if len({s for _, s in sizes}) > 1:
                    varying.append({"dim": d, "sizes": sizes})
        fields.append(
            FieldReport(path, leaf.kind, leaf.dtype, delivered_leaves[path].dtype, leaf.shape, varying)
        )
    executor = {"name": p.choice.name, "workers": p.choice.workers, "reason": p.choice.reason}
    return Report(p.source.name, p.source.kind, p.spec, delivered, executor, fields)

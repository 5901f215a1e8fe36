"""The inspect report as one self-contained HTML page: a warning box for NaN/Inf, the fields table, and per field
the plots drawn by matplotlib and embedded as PNG data (value histogram or class balance, lengths with the padding
they cost, a grid of images), then the notes."""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfbridge.report import padding_text
from tfbridge.spec import format_shape

BAR = "#1f77b4"  # every bar of every plot (scripts/check_report_html.py looks for it in a screenshot)
_MANY_CLASSES = 40  # beyond this, classes are drawn sorted by count, unlabelled
_FIGSIZE = (5.6, 2.6)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h1 small { color: #666; font-weight: normal; font-size: 0.65em; }
h2 { font-size: 1.15em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f0f3f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { background: #fdecea; color: #b3261e; font-weight: bold; }
.note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
code { background: #f5f5f5; padding: 0 0.2em; }
.warn { border: 2px solid #d93025; background: #fdecea; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }
.warn h2 { color: #b3261e; margin: 0.2em 0; font-size: 1.05em; } .warn li { margin: 0.25em 0; }
.fields { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.field { border: 1px solid #dde3ea; border-radius: 6px; padding: 0.5em 1em 0.8em; flex: 0 1 auto; }
.field h3 { margin: 0.2em 0 0.5em; font-size: 1.05em; } .field h3 span { color: #666; font-weight: normal; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; max-width: 100%; } figure img { max-width: 100%; border: 1px solid #eee; display: block; }
figcaption { font-size: 0.85em; color: #444; max-width: 34em; margin-top: 0.2em; }
"""


@dataclass
class Plot:
    kind: str  # values, classes, lengths or images: the figure's data-plot attribute
    alt: str
    png: str
    caption: str


def _png(plt: Any, fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(plt: Any, edges: list[float], counts: list[int], title: str, xlabel: str, ylabel: str) -> Any:
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=BAR, edgecolor="white", linewidth=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    return fig, ax


def _values_plot(plt: Any, f: dict[str, Any]) -> Plot | None:
    s = f["stats"]
    hist = s.get("histogram")
    if not hist:
        return None
    text = s["string_length"] is not None
    what = "string lengths (bytes)" if text else "values"
    fig, _ = _bars(plt, hist["edges"], hist["counts"], f"{f['path']}: {what}", what, "count")
    sampled = hist["sampled"] < hist["of"]
    caption = (f"a uniform sample of {hist['sampled']:,} of {hist['of']:,} values" if sampled
               else f"all {hist['of']:,} values")  # fmt: skip
    if not text:
        caption += f"; min {s['min']:.4g}, max {s['max']:.4g}, mean {s['mean']:.4g}, std {s['std']:.4g}"
    if s["nan"] or s["inf"]:
        caption += f"; not drawn: {s['nan']} NaN, {s['inf']} Inf"
    return Plot("values", f"histogram of {f['path']} {what}", _png(plt, fig), caption)


def _classes_plot(plt: Any, f: dict[str, Any], label: bool) -> Plot:
    distinct: dict[str, int] = f["stats"]["distinct"]
    names, counts = list(distinct), list(distinct.values())
    total = sum(counts)
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    if len(names) > _MANY_CLASSES:
        ax.bar(range(len(names)), sorted(counts, reverse=True), width=1.0, color=BAR)
        ax.set_xlabel("classes, most common first", fontsize=8)
    else:
        ax.bar(range(len(names)), counts, color=BAR, edgecolor="white")
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0, fontsize=7)
    what = "class balance" if label else "value counts"
    ax.set_title(f"{f['path']}: {what}", fontsize=9)
    ax.set_ylabel("count", fontsize=8)
    ax.tick_params(labelsize=7)
    most, least = max(distinct, key=lambda k: distinct[k]), min(distinct, key=lambda k: distinct[k])
    caption = f"{len(names)} {'classes' if label else 'values'}"
    if distinct[most] == distinct[least]:
        caption += f", {distinct[most] / total:.1%} each"
    else:
        caption += (f"; most common {most!r} ({distinct[most] / total:.1%}), "
                    f"least common {least!r} ({distinct[least] / total:.1%})")  # fmt: skip
    return Plot("classes", f"{what} of {f['path']}", _png(plt, fig), caption)


def _lengths_plot(plt: Any, f: dict[str, Any], batched: bool) -> Plot:
    lengths = f["lengths"]
    edges, counts = lengths["histogram"]["edges"], lengths["histogram"]["counts"]
    per = "rows of the batches" if batched else "examples"
    fig, ax = _bars(plt, edges, counts, f"{f['path']}: lengths", "length", per)
    pad = lengths.get("padding")
    caption = (f"{lengths['count']:,} {per}, lengths {lengths['min']} to {lengths['max']} "
               f"(median {lengths['median']:g})")  # fmt: skip
    if pad:
        for b in pad["boundaries"]:
            if b <= edges[-1]:
                ax.axvline(b, color="#d62728", linewidth=1, linestyle="--")
        caption += f"; {padding_text(pad)} (dashed: the bucket boundaries)"
    return Plot("lengths", f"histogram of {f['path']} lengths", _png(plt, fig), caption)


def _displayable(pixels: np.ndarray) -> np.ndarray:
    """RGB or grey values in [0, 1]: uint8 over 255, [0, 1] floats as they are, anything else stretched."""
    x = pixels[..., :3].astype(np.float64)
    finite = np.isfinite(x)
    lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 1.0)
    x = np.where(finite, x, lo)
    if pixels.dtype == np.uint8 or (pixels.dtype.kind in "iu" and lo >= 0 and hi <= 255 and hi > 1):
        x = x / 255
    elif not (lo >= 0 and hi <= 1):
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x[..., 0] if x.shape[-1] == 1 else x


def _images_plot(plt: Any, path: str, images: list[Any]) -> Plot:
    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), images, strict=False):
        ax.imshow(_displayable(image.pixels), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        where = f"element {image.element}" + ("" if image.row is None else f", row {image.row}")
        ax.set_title(where, fontsize=7)
    shape = "x".join(str(n) for n in images[0].pixels.shape)
    caption = f"the first {len(images)} images seen ({shape})"
    return Plot("images", f"images of {path}", _png(plt, fig), caption)


def _plots(plt: Any, f: dict[str, Any], images: list[Any], batched: bool) -> list[Plot]:
    label = len(f["shape"]) == (1 if batched else 0)  # one value per example
    plots = []
    distinct = f["stats"]["distinct"]
    if distinct:
        plots.append(_classes_plot(plt, f, label))
    else:
        plot = _values_plot(plt, f)
        if plot is not None:
            plots.append(plot)
    if f["lengths"]:
        plots.append(_lengths_plot(plt, f, batched))
    if images:
        plots.append(_images_plot(plt, f["path"], images))
    return plots


def render(report: Any) -> str:
    from tfbridge._deps import optional

    matplotlib = optional("matplotlib", purpose="the HTML report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = report.to_dict()
    e = html.escape
    batched = d["batched"]
    kind = f"{d['kind']} source, {'batched' if batched else 'one example per element'}"
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tfbridge report: {e(report.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>tfbridge report: {e(report.name)}"
        + ("" if report.name == d["source"] else f" <small>{e(d['source'])}</small>")
        + "</h1>",
        f"<p class='note'>{e(kind)}; scanned "
        f"{'every element' if d['scanned']['full'] else 'a sample'} ({d['scanned']['elements']} elements). "
        f"Executor <code>auto</code> picks <b>{e(d['executor']['name'])}</b>"
        f"{' x' + str(d['executor']['workers']) if d['executor']['workers'] > 1 else ''}: "
        f"{e(d['executor']['reason'])}.</p>",
    ]
    warnings = report.warnings()
    if warnings:
        out.append("<div class='warn' role='alert'><h2>&#9888; NaN / Inf values</h2><ul>")
        out += [f"<li>{e(w)}</li>" for w in warnings]
        out.append("</ul></div>")
    out.append(
        "<h2>Fields</h2><table><tr><th>field</th><th>dtype</th><th>delivered</th><th>shape</th><th>kind</th>"
        "<th>min</th><th>max</th><th>mean</th><th>std</th><th>NaN</th><th>Inf</th></tr>"
    )
    for k, f in enumerate(d["fields"]):
        s = f["stats"]
        nums = "".join(
            f"<td class='num'>{'' if s[k] is None else f'{s[k]:.4g}'}</td>" for k in ("min", "max", "mean", "std")
        )
        bad = "".join(f"<td class='num{' bad' if s[k] else ''}'>{s[k]}</td>" for k in ("nan", "inf"))
        out.append(
            f"<tr><td><a href='#field-{k}'>{e(f['path'])}</a></td><td>{e(f['dtype'])}</td>"
            f"<td>{e(f['delivered_dtype'])}</td><td>{e(format_shape(f['shape']))}</td><td>{e(f['kind'])}</td>"
            f"{nums}{bad}</tr>"
        )
    out.append("</table>")
    if batched:
        out.append("<p class='note'>Shapes are of a batch: the first dimension is the batch.</p>")
    out.append("<h2>Plots</h2><div class='fields'>")
    for k, (f, field) in enumerate(zip(d["fields"], report.fields, strict=True)):
        shape = format_shape(f["shape"]) + (f", per example {format_shape(f['shape'][1:])}" if batched else "")
        out.append(
            f"<section class='field' id='field-{k}'><h3>{e(f['path'])} "
            f"<span>{e(f['dtype'])} {e(shape)} {e(f['kind'])}</span></h3><div class='plots'>"
        )
        plots = _plots(plt, f, field.images, batched)
        for p in plots:
            out.append(
                f"<figure class='plot' data-plot='{p.kind}' data-field='{e(f['path'])}'>"
                f"<img alt='{e(p.alt)}' src='{p.png}'><figcaption>{e(p.caption)}</figcaption></figure>"
            )
        if not plots:
            out.append("<p class='note'>no finite values to plot</p>")
        out.append("</div></section>")
    out.append("</div>")
    notes = report.notes()
    if notes:
        out.append("<h2>Notes</h2>")
        out += [f"<p class='note'>{e(n)}</p>" for n in notes]
    out.append("</body></html>")
    return "\n".join(out)


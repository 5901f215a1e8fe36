"""The inspect report as one self-contained HTML page: tables, notes, and plots embedded as PNG data."""

from __future__ import annotations

import base64
import html
import io
import itertools
from typing import Any

from tfbridge._deps import optional
from tfbridge.spec import format_shape

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f0f3f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.9em; margin: 0.2em 0; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _length_plot(plt: Any, path: str, lengths: dict[str, Any]) -> str:
    edges, counts = lengths["histogram"]["edges"], lengths["histogram"]["counts"]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="#1f77b4", edgecolor="white")
    pad = lengths.get("padding")
    if pad:
        for b in pad["boundaries"]:
            if b <= edges[-1]:
                ax.axvline(b, color="#d62728", linewidth=1, linestyle="--")
        ax.set_title(
            f"{path}: lengths (dashed: {pad['buckets']} bucket boundaries); padded/real "
            f"plain {pad['plain']:.2f}, bucketed {pad['bucketed']:.2f}",
            fontsize=9,
        )
    else:
        ax.set_title(f"{path}: lengths", fontsize=9)
    ax.set_xlabel("length")
    ax.set_ylabel("examples")
    data = _png(fig)
    plt.close(fig)
    return data


def render(report: Any) -> str:
    matplotlib = optional("matplotlib", purpose="the HTML report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = report.to_dict()
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tfbridge report: {e(d['source'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>tfbridge report: {e(d['source'])}</h1>",
        f"<p class='note'>{e(d['kind'])} source, {'batched' if d['batched'] else 'one example per element'}; "
        f"scanned {'every element' if d['scanned']['full'] else 'a sample of'} ({d['scanned']['elements']} elements). "
        f"Executor <code>auto</code> picks <b>{e(d['executor']['name'])}</b>"
        f"{' x' + str(d['executor']['workers']) if d['executor']['workers'] > 1 else ''}: "
        f"{e(d['executor']['reason'])}.</p>",
        "<h2>Fields</h2><table><tr><th>field</th><th>dtype</th><th>delivered</th><th>shape</th><th>kind</th>"
        "<th>min</th><th>max</th><th>mean</th><th>std</th><th>NaN</th><th>Inf</th></tr>",
    ]
    for f in d["fields"]:
        s = f["stats"]
        shape = format_shape(f["shape"])
        nums = "".join(
            f"<td class='num'>{'' if s[k] is None else f'{s[k]:.4g}'}</td>" for k in ("min", "max", "mean", "std")
        )
        out.append(
            f"<tr><td>{e(f['path'])}</td><td>{e(f['dtype'])}</td><td>{e(f['delivered_dtype'])}</td>"
            f"<td>{e(shape)}</td><td>{e(f['kind'])}</td>{nums}<td class='num'>{s['nan']}</td>"
            f"<td class='num'>{s['inf']}</td></tr>"
        )
    out.append("</table>")
    notes = report.notes()
    for f in d["fields"]:
        if f["lengths"]:
            out.append(f"<h2>Lengths of {e(f['path'])}</h2>")
            src = _length_plot(plt, f["path"], f["lengths"])
            out.append(f"<img alt='histogram of {e(f['path'])} lengths' src='{src}'>")
    if notes:
        out.append("<h2>Notes</h2>")
        out += [f"<p class='note'>{e(n)}</p>" for n in notes]
    out.append("</body></html>")
    return "\n".join(out)

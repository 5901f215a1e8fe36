"""``label=``: split label columns off dict-shaped elements, giving Keras's ``(features, labels)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfbridge import _nest
from tfbridge._checks import short
from tfbridge.errors import TfBridgeError

Label = str | Sequence[str]


def check_label(label: Any) -> None:
    ok = isinstance(label, str) or (
        isinstance(label, (list, tuple)) and bool(label) and all(isinstance(n, str) for n in label)
    )
    if not ok:
        msg = f"label must be a column name or a non-empty list of column names. Received: {short(label)}"
        raise TfBridgeError(msg)
    if not isinstance(label, str):
        repeated = sorted({n for n in label if list(label).count(n) > 1})
        if repeated:
            msg = (
                f"label names the column(s) {repeated} more than once; each label column is one output. "
                f"Received: {short(label)}\nHint: name each label column once."
            )
            raise TfBridgeError(msg)


def split_label(element: Any, label: Label) -> tuple[Any, Any]:
    """``{'a':..,'y':..}`` -> ``({'a':..}, y)``; a list of labels gives a dict of them."""
    element = _nest.normalize(element)
    names = [label] if isinstance(label, str) else list(label)
    if not isinstance(element, dict):
        msg = (
            f"label={short(label)} needs elements that are dicts of columns, but an element is "
            f"{_nest.describe_structure(element)}.\n"
            "Hint: label= is for DataFrames and dict-shaped sources; for tuples the Keras split "
            "(x, y, sample_weight) already applies."
        )
        raise TfBridgeError(msg)
    missing = [n for n in names if n not in element]
    if missing:
        msg = (
            f"label column(s) {missing} not found. The element has the columns {sorted(element)}.\n"
            f"Hint: pass label= the name(s) of existing columns. Received: label={short(label)}"
        )
        raise TfBridgeError(msg)
    features = {k: v for k, v in element.items() if k not in names}
    if not features:
        msg = f"label={short(label)} takes every column; nothing is left as features."
        raise TfBridgeError(msg)
    labels = element[names[0]] if isinstance(label, str) else {n: element[n] for n in names}
    return features, labels

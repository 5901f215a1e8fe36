"""``label=``: split label columns off dict-shaped elements, giving Keras's ``(features, labels)``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tfbridge import _nest
from tfbridge.errors import TfBridgeError, short
from tfbridge.sources._base import Indexed, Stream

Label = str | Sequence[str]


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


class LabelledIndexed(Indexed):
    def __init__(self, inner: Indexed, label: Label) -> None:
        self.inner, self.label = inner, label
        self.obj, self.batched = inner.obj, inner.batched

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, index: int) -> Any:
        return split_label(self.inner.get(index), self.label)

    def on_epoch_begin(self) -> None:
        self.inner.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.inner.on_epoch_end()


class LabelledStream(Stream):
    def __init__(self, inner: Stream, label: Label) -> None:
        self.inner, self.label = inner, label
        self.obj, self.batched, self.one_shot = inner.obj, inner.batched, inner.one_shot

    def iterate(self) -> Iterator[Any]:
        return (split_label(e, self.label) for e in self.inner.iterate())

    def scan(self) -> Iterator[Any]:
        return (split_label(e, self.label) for e in self.inner.scan())

    def peek(self, n: int) -> Any:
        peek = self.inner.peek(n)
        peek.samples = [(i, split_label(e, self.label)) for i, e in peek.samples]
        return peek

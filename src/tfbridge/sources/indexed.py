"""Objects with ``__len__`` and ``__getitem__``: Keras PyDataset/Sequence, torch/HF map-style datasets,
plain lists of batches, user classes."""

from __future__ import annotations

from typing import Any

from tfbridge.errors import SourceError, TfBridgeError, short
from tfbridge.sources._base import Indexed, call_user


class IndexedObject(Indexed):
    """``obj[i]`` for ``i in range(len(obj))``; ``on_epoch_begin``/``on_epoch_end`` called when present."""

    def __init__(self, obj: Any, batched: bool) -> None:
        self.obj = obj
        self.batched = batched

    def __len__(self) -> int:
        try:
            size = len(self.obj)
        except Exception as exc:
            msg = f"len() of the source {self.name} raised {type(exc).__name__}: {exc}"
            raise SourceError(msg) from exc
        if not isinstance(size, int) or size < 0:
            msg = f"len() of the source {self.name} must be a non-negative int. Received: {short(size)}"
            raise TfBridgeError(msg)
        return size

    def get(self, index: int) -> Any:
        return self.obj[index]

    def on_epoch_begin(self) -> None:
        hook = getattr(self.obj, "on_epoch_begin", None)
        if callable(hook):
            call_user(hook, None)

    def on_epoch_end(self) -> None:
        hook = getattr(self.obj, "on_epoch_end", None)
        if callable(hook):
            call_user(hook, None)

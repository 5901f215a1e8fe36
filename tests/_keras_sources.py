"""Keras PyDataset sources for test_light_workers.py: a user's module as it usually is, importing Keras at the top.
Worker processes get light copies of these classes and never import this module (nor Keras) unless a method's
code uses Keras."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import keras
import numpy as np
from keras.utils import PyDataset

SCALE = 3.0  # a module constant the methods use: travels with them


def _rows(index: int, rows: int) -> np.ndarray:
    return np.arange(index * rows, (index + 1) * rows, dtype=np.float32) * SCALE


class NumpyBatches(PyDataset):
    """Batches made with numpy; each says whether TensorFlow or Keras was imported where it was made."""

    def __init__(self, n: int = 12, rows: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n, self.rows = n, rows

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        heavy = any(name in sys.modules for name in ("tensorflow", "keras"))
        return {"x": _rows(index, self.rows), "heavy": np.array(heavy), "pid": np.array(os.getpid())}


class Shuffled(NumpyBatches):
    """A subclass of a subclass, using super() and the Keras base's members in __getitem__."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(n=8, rows=2, workers=3)
        self.order = np.arange(self.n)[::-1].copy()

    def __getitem__(self, index: int) -> Any:
        element = super().__getitem__(int(self.order[index]))
        element["meta"] = np.array([self.workers, self.num_batches, self.max_queue_size])
        return element

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.order = self.order[::-1].copy()


class UsesKeras(PyDataset):
    """A __getitem__ that uses Keras itself: the worker imports it, and it works."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        x = keras.ops.convert_to_numpy(keras.ops.ones((2,)) * index)
        return {"x": np.asarray(x, np.float32), "keras": np.array("keras" in sys.modules)}


class CallsBaseGetitem(PyDataset):
    """A __getitem__ that calls the Keras base's, which raises NotImplementedError."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return super().__getitem__(index)


class HoldsArrays(PyDataset):
    """Holds a big array (shared with workers) and small ones; nested in a dict and a list too."""

    def __init__(self, big: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.big = big
        self.nested = {"again": [big[: len(big) // 2]], "small": np.arange(5)}

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> Any:
        row = self.big[index * 1000]
        half = self.nested["again"][0]
        return {"row": row.copy(), "half": np.array(half[index].sum()), "writeable": np.array(self.big.flags.writeable)}


class WritesIntoArray(HoldsArrays):
    """Writes into its big array: read-only in workers."""

    def __getitem__(self, index: int) -> Any:
        self.big[index] = 0
        return self.big[index].copy()


_LOCK = threading.Lock()  # a module global that does not pickle: the light copy cannot take it along


class UsesModuleLock(PyDataset):
    """Its __getitem__ uses an unpicklable module global: the light copy fails, the source travels as before."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        with _LOCK:
            return {"x": np.full((2,), index, np.int64), "keras": np.array("keras" in sys.modules)}


class Slotted(PyDataset):
    """A class with __slots__: no light copy is made."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        super().__init__()
        self.n = 2

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        return {"x": np.full((2,), index, np.int64)}


class CountedByNumBatches(PyDataset):
    """Keras 3's way to give a length: the ``num_batches`` property, no ``__len__``; None makes it infinite."""

    def __init__(self, count: int | None = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count, self.ends = count, 0

    @property
    def num_batches(self) -> int | None:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return _rows(index, 2).reshape(2, 1).repeat(3, axis=1), np.full((2,), index, np.float32)

    def on_epoch_end(self) -> None:
        self.ends += 1

"""The plain class of benchmarks/workers.py, in a module that imports no Keras (a plain class in a module that
imports Keras makes workers import it too: unpickling the class imports its module)."""

from __future__ import annotations

from typing import Any

import numpy as np

ROWS = 32


class Plain:
    """A plain class: ``__len__``/``__getitem__`` with numpy, no Keras base."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(i)
        return rng.random((ROWS, 16), dtype=np.float32), np.full((ROWS,), i % 2, np.int32)

"""Small sources shared by several test files. Free of TensorFlow, so worker processes and Ray workers that
import this module to unpickle a source start light."""

from __future__ import annotations

from typing import Any

import numpy as np


class Listed:
    """An indexed source (``__len__``/``__getitem__``) over a list of ready-made elements."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class Deterministic:
    """``n`` batches whose content depends only on the index; reverses its own order on_epoch_end."""

    def __init__(self, n: int = 37, rows: int = 8, width: int = 300) -> None:
        self.order = np.arange(n)
        self.rows, self.width = rows, width

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Any:
        j = int(self.order[i])
        rng = np.random.default_rng(j)
        x = {"x": rng.random((self.rows, self.width)), "n": np.full((self.rows,), j)}
        return x, rng.integers(0, 5, self.rows)

    def on_epoch_end(self) -> None:
        self.order = self.order[::-1].copy()

"""torch and grain sources for tests/test_torch_grain.py that worker processes must unpickle.

Free of TensorFlow (worker processes importing this module to unpickle a source start light); grain is imported
only by the functions that build grain datasets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

WIDTH = 16


def clean(i: int) -> np.ndarray:
    """The clean 16-vector of example ``i`` (float32)."""
    return np.arange(i * WIDTH, (i + 1) * WIDTH, dtype=np.float32) / 100.0


def index_of(row: np.ndarray) -> int:
    """The ``i`` of a row ``clean(i)`` (or of a noisy one)."""
    return int(np.rint(row[0] * 100.0 / WIDTH))


def noisy(i: int) -> np.ndarray:
    """``clean(i)`` with noise that depends only on ``i``."""
    return clean(i) + np.random.default_rng(i).normal(0.0, 0.1, WIDTH).astype(np.float32)


class NoisyVectors(Dataset):
    """A denoising dataset: example ``i`` is ``(noisy_x, x)``, two float32 16-vectors as torch tensors."""

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(noisy(i)), torch.from_numpy(clean(i))


class Records(Dataset):
    """Dict examples: ``{"x": float32 (3,), "id": int64 scalar, "mask": bool (3,)}``."""

    def __init__(self, n: int = 10) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "x": torch.full((3,), float(i)),
            "id": torch.tensor(i),
            "mask": torch.tensor([True, i % 2 == 0, False]),
        }


class HalfPrecision(Dataset):
    """``(bfloat16 (4,), float16 (4,))`` tensors whose values are exact in both: ``i + k / 4``."""

    def __init__(self, n: int = 6) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.arange(4, dtype=torch.float32) / 4 + i
        return values.to(torch.bfloat16), values.to(torch.float16)


class Counting(IterableDataset):
    """An iterable dataset of ``n`` examples ``(x, y)``: ``x = clean(i)``, ``y = i`` as int64 tensors."""

    def __init__(self, n: int = 7) -> None:
        self.n = n

    def __iter__(self) -> Any:
        for i in range(self.n):
            yield torch.from_numpy(clean(i)), torch.tensor(i)


def with_sum(row: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """A grain map function: ``(row, row.sum())``."""
    return row, np.float32(row.sum())


def rows(n: int = 12) -> np.ndarray:
    return np.stack([clean(i) for i in range(n)])


def grain_map(n: int = 12) -> Any:
    """``grain.MapDataset.source(rows(n)).map(with_sum)``: example ``i`` is ``(clean(i), clean(i).sum())``."""
    import grain

    return grain.MapDataset.source(rows(n)).map(with_sum)

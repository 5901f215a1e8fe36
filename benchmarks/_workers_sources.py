"""PyDataset sources for benchmarks/workers.py, in a module as users write them: Keras imported at the top."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras.utils import PyDataset

ROWS = 32


class NumpyPyDataset(PyDataset):
    """A keras.utils.PyDataset whose ``__getitem__`` uses numpy only."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(i)
        return rng.random((ROWS, 16), dtype=np.float32), np.full((ROWS,), i % 2, np.int32)


class ArrayPyDataset(PyDataset):
    """A keras.utils.PyDataset holding its data as one big array attribute; batches are slices of it."""

    def __init__(self, features: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = features

    def __len__(self) -> int:
        return len(self.features) // ROWS

    def __getitem__(self, i: int) -> Any:
        x = self.features[i * ROWS : (i + 1) * ROWS]
        return x * 2.0, np.full((ROWS,), i % 2, np.int32)

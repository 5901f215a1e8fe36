"""Sources for the resume tests (importable by the subprocesses of tests/test_resume.py)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np


class Records:
    """``n`` examples: a dict of 4 float32 features (i, i+1, i+2, i+3) and the int64 label i."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return {"x": np.arange(i, i + 4, dtype=np.float32), "y": np.int64(i)}


class Augmented:
    """``n`` examples (i, a random draw of numpy's and of Python's random): reproducible only where the
    executor seeds each element."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.int64(i), np.float32(np.random.random()), np.float32(random.random())


class Scalars:
    """``n`` small examples (a scalar each): they travel in chunks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.int64(i)


class Tokens:
    """``n`` token sequences of lengths 1 to 15 (element i holds i, repeated)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return np.full(1 + (i * 7) % 15, i, np.int32)

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


class Nested:
    """``n`` examples holding a ragged field: two rows of lengths that vary (i % 3 and 1), and the id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return {"id": np.int64(i), "rows": [list(range(i, i + i % 3)), [i]]}


def stream() -> Any:
    """A generator function: 50 examples, the same each time it is called."""
    for i in range(50):
        yield np.int64(i), np.full((3,), i, np.float32)


def _as_given(batch: Any) -> Any:
    return batch


def hf_tokens(n: int, blocks: bool) -> Any:
    """A datasets.Dataset of ``n`` token lists (lengths 1 to 12) and labels; with ``blocks``, with a transform
    (datasets' own formatting), which tfbridge reads a block at a time through Python, else held in memory."""
    import datasets

    ds = datasets.Dataset.from_dict({"ids": [[i] * (1 + (i * 5) % 12) for i in range(n)], "label": list(range(n))})
    return ds.with_transform(_as_given) if blocks else ds

"""Sources shared by test files, and every source a worker process or Ray worker unpickles (but the fault
injectors, in _fault_sources.py). Free of TensorFlow, so worker processes and Ray workers that
import this module to unpickle a source start light."""

from __future__ import annotations

import os
import random
import time
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


class BigArrays:
    """37 elements large enough to travel through shared memory (256 KB and 1 MB); content checkable from the
    index, which the second array starts with."""

    def __len__(self) -> int:
        return 37

    def __getitem__(self, i: int) -> Any:
        return np.full((64, 1024), i, np.float32), np.arange(i, i + 64 * 2000, dtype=np.int64).reshape(64, 2000)


class Bf16:
    """Four bfloat16 arrays of 128 KB (through shared memory), element i filled with i."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> Any:
        import ml_dtypes

        return np.full((256, 256), i, dtype=ml_dtypes.bfloat16)


class Augmenting:
    """Random values from the legacy global RNG, as augmentation code often draws them."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> Any:
        return np.random.random((1, 1))


GRAY_VALUE = 77  # the bad image's pixels: a message that dumped them would show "77, 77"


class ImageFolder:
    """A directory-like indexed source: element i is ({"image": uint8[32, 32, 3]}, label); one image, at ``bad``,
    has ``bad_shape`` (a grayscale image among RGB ones)."""

    def __init__(self, size: int = 5000, bad: int = 4321, bad_shape: tuple[int, ...] = (32, 32, 1)) -> None:
        self.size, self.bad, self.bad_shape = size, bad, bad_shape

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        if index == self.bad:
            image = np.full(self.bad_shape, GRAY_VALUE, np.uint8)
        else:
            image = np.full((32, 32, 3), index % 200, np.uint8)
        return {"image": image}, index % 10


class PairFolder(ImageFolder):
    """The same images as (image, label) pairs: the image is Keras's x."""

    def __getitem__(self, index: int) -> Any:
        features, label = super().__getitem__(index)
        return features["image"], label


class Records:
    """``n`` batches whose content depends only on the index; appends every index it is asked for to ``log``
    (when given) and raises OSError at ``fail_at``."""

    def __init__(self, n: int = 30, log: str | os.PathLike[str] | None = None, fail_at: int | None = None) -> None:
        self.n, self.log, self.fail_at = n, None if log is None else str(log), fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{i}\n")
        if i == self.fail_at:
            raise OSError(f"disk hiccup at {i}")
        features = {"x": np.full((4, 3), i, np.float64), "tokens": np.arange(i % 5 + 1)[None].repeat(4, 0)}
        return features, np.full((4,), i)


class Burning:
    """``n`` batches of float32 (8, 4), each taking ``ms`` of the reading thread's CPU time in pure Python (the
    GIL held): a CPU-bound source whose cost does not depend on how busy the machine is."""

    def __init__(self, n: int, ms: float) -> None:
        self.n, self.ms = n, ms

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        end = time.thread_time() + self.ms / 1e3
        while time.thread_time() < end:
            pass
        return np.full((8, 4), i, np.float32)


class Counting:
    """``n`` batches of 4 rows: features float64 (4, 2) and labels int64 (4,), both filled with the index; counts
    the epoch hooks; ``jitter_s``: a random delay of up to that long per element (uneven element times)."""

    def __init__(self, n: int = 37, jitter_s: float = 0.0) -> None:
        self.n, self.jitter_s = n, jitter_s
        self.begins = self.ends = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if self.jitter_s:
            time.sleep(random.random() * self.jitter_s)  # uneven work, not a wait
        return np.full((4, 2), i, np.float64), np.full((4,), i, np.int64)

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1


class FileGated:
    """40 small examples; element 20 waits (at most 30 s, then fails) until the file ``gate`` exists, so a test in
    another process can hold it back."""

    def __init__(self, gate: str) -> None:
        self.gate = gate

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        if i == 20:
            deadline = time.monotonic() + 30
            while not os.path.exists(self.gate):
                if time.monotonic() > deadline:
                    raise RuntimeError("element 20 was never released: the elements before it were held back")
                time.sleep(0.01)
        return np.float32(i), np.int64(i)


class ExitsAt3:
    """Ten scalars; element 3 calls sys.exit(3) (or raises a bare BaseException when ``base``)."""

    def __init__(self, base: bool = False) -> None:
        self.base = base

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> Any:
        if i == 3:
            if self.base:
                raise BaseException("a bare BaseException")
            raise SystemExit(3)
        return np.float32(i)


class WithOutlier:
    """``n`` batches of 1 MB (256 rows x 1024 float32) and, as the last element, one of ``big_mb`` MB (the same
    rows, more of them): a source whose elements are all alike but one. Every row of batch i holds i."""

    ROW_BYTES = 1024 * 4

    def __init__(self, n: int = 24, big_mb: int = 96) -> None:
        self.n, self.big_mb = n, big_mb

    def __len__(self) -> int:
        return self.n + 1

    def __getitem__(self, i: int) -> Any:
        mb = self.big_mb if i == self.n else 1
        return np.full((mb * 2**20 // self.ROW_BYTES, 1024), i, np.float32)

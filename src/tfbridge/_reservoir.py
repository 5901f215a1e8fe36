"""A uniform random sample of a stream of numbers, of bounded size (the report's value histograms)."""

from __future__ import annotations

import numpy as np


class Reservoir:
    """Keeps the ``size`` values with the smallest random keys among all values added: a uniform sample without
    replacement, whatever the order and chunking of the stream. Seeded: the same stream gives the same sample.

    Once full, only keys below the largest one kept can enter, and those keys are uniform below it: a chunk of
    ``n`` values costs a binomial draw and the few values that enter, not ``n`` keys. Candidates are buffered and
    merged ``size`` at a time, so a value costs O(1) amortised."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._values = np.empty(0)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_count = 0
        self._threshold = 1.0  # keys at or above it cannot enter (the largest key kept, once full)

    @property
    def values(self) -> np.ndarray:
        if self._pending:
            self._merge()
        return self._values

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        n = values.size
        if n == 0:
            return
        self.seen += n
        if self._threshold < 1.0:
            m = int(self._rng.binomial(n, self._threshold))
            if m == 0:
                return
            if m < n:
                values = values[self._rng.choice(n, m, replace=False)]
            keys = self._rng.random(m) * self._threshold
        else:
            keys = self._rng.random(n)
        self._pending.append((keys, values))
        self._pending_count += keys.size
        if self._pending_count >= self.size:
            self._merge()

    def _merge(self) -> None:
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        values = np.concatenate([self._values, *(v for _, v in self._pending)])
        self._pending, self._pending_count = [], 0
        if keys.size > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keys, values = keys[keep], values[keep]
        self._keys, self._values = keys, values
        if keys.size >= self.size:
            self._threshold = float(keys.max())

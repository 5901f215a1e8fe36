"""Streaming moments (count, mean, sum of squared deviations) merged exactly in float64: the one formula behind
``adapt_normalization`` and the report's statistics."""

from __future__ import annotations

from typing import Any

import numpy as np


def combine(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> tuple[int, Any, Any]:
    """(count, mean, sum of squared deviations) of many groups at once (axis 0 runs over the groups)."""
    n = int(counts.sum())
    if n == 0:
        return 0, None, None
    weights = counts.astype(np.float64).reshape((-1,) + (1,) * (np.ndim(means) - 1))
    mean = (weights * means).sum(0) / n
    m2 = m2s.sum(0) + (weights * (means - mean) ** 2).sum(0)
    return n, mean, m2


def merge(n_a: int, mean_a: Any, m2_a: Any, n_b: int, mean_b: Any, m2_b: Any) -> tuple[int, Any, Any]:
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations); works on floats and arrays."""
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)

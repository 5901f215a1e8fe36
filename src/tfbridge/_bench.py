"""Timing helpers shared by ``tfbridge bench`` and the project's benchmarks: throughput of an iterable
measured after a warm-up, over a window long enough that queues filled during warm-up do not flatter it.

A tf.data dataset is consumed the way a training loop consumes it: by a compiled TensorFlow loop pulling from
its iterator, with no Python per element on the consumer side (iterating in eager Python would add about
0.1 ms of Python per element to every method and hide the differences being measured)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measurement:
    name: str
    rates: list[float] = field(default_factory=list)  # elements per second, one per repetition
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.rates), max(self.rates)) if self.rates else (float("nan"), float("nan"))


def _graph_puller(dataset: Any) -> Callable[[int], None]:
    import tensorflow as tf

    iterator = iter(dataset)

    def pull(n: Any) -> Any:
        i = tf.constant(0)
        while i < n:
            iterator.get_next()
            i += 1
        return i

    graph_pull = tf.function(pull)  # not as a decorator: tf is untyped, and a decorator would untype pull
    return lambda n: graph_pull(tf.constant(n)) and None


def rate(make: Callable[[], Iterable[Any]], *, warmup: int, window_s: float, min_elements: int) -> float:
    """Elements per second of a fresh ``make()`` after ``warmup`` elements, over at least ``window_s``
    seconds and ``min_elements`` elements."""
    made = make()
    if type(made).__module__.startswith("tensorflow"):
        return _graph_rate(made, warmup=warmup, window_s=window_s, min_elements=min_elements)
    it = iter(made)
    try:
        for _ in range(warmup):
            next(it)
        count, start = 0, time.perf_counter()
        while True:
            next(it)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= window_s and count >= min_elements:
                return count / elapsed
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        del it


def _graph_rate(dataset: Any, *, warmup: int, window_s: float, min_elements: int) -> float:
    pull = _graph_puller(dataset)
    pull(warmup)
    count, step, start = 0, 1, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        pull(step)
        count += step
        elapsed = time.perf_counter() - start
        if elapsed >= window_s and count >= min_elements:
            return count / elapsed
        # about 0.1 s per pull keeps the per-call overhead out of the figure
        step = max(1, min(step * 2, int(step * 0.1 / max(time.perf_counter() - t0, 1e-6)) or 1))


def measure(
    name: str, make: Callable[[], Iterable[Any]], *, repeats: int, warmup: int, window_s: float, min_elements: int
) -> Measurement:
    m = Measurement(name)
    for _ in range(repeats):
        try:
            m.rates.append(rate(make, warmup=warmup, window_s=window_s, min_elements=min_elements))
        except Exception as exc:  # a method that fails is reported, not hidden
            m.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            break
    return m


def plain_from_generator(source: Any, signature: Any) -> Any:
    """The usual hand-written bridge: one Python generator over the source, in order."""
    import tensorflow as tf

    def gen() -> Any:
        for i in range(len(source)):
            yield source[i]

    return tf.data.Dataset.from_generator(gen, output_signature=signature).prefetch(tf.data.AUTOTUNE)

"""Timing helpers shared by ``tfbridge bench`` and the project's benchmarks: throughput of an iterable
measured after a warm-up, over a window long enough that queues filled during warm-up do not flatter it.

A pass (epoch) that ends inside the window is not cut short: the first pass is then the warm-up, and whole
passes, each from a fresh iterator, are timed until they fill the window, so the figure includes what each
epoch pays to start (a new generator, refilling queues) and a source of 20 elements gets a figure at all. A pass
longer than the window (or an endless source) is timed over the window inside it. A source that can be read only
once (a plain iterator) is timed over its one pass after the warm-up.

A tf.data dataset is consumed the way a training loop consumes it: by a compiled TensorFlow loop pulling from
its iterator, with no Python per element on the consumer side (iterating in eager Python would add about
0.1 ms of Python per element to every method and hide the differences being measured)."""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

_PULL_S = 0.1  # seconds one pull of the window aims at: long enough to keep per-call overhead out of the figure


@dataclass(frozen=True)
class Timing:
    """One repetition: elements per second over ``passes`` whole passes, or (``passes == 0``) over a window
    inside one pass; ``once``: the source can be read once, and this is its one pass after the warm-up."""

    rate: float
    passes: int
    once: bool = False


@dataclass
class Measurement:
    name: str
    rates: list[float] = field(default_factory=list)  # elements per second, one per repetition
    error: str | None = None
    timings: list[Timing] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.rates), max(self.rates)) if self.rates else (float("nan"), float("nan"))

    @property
    def timed_over(self) -> str:
        """What the figures were timed over, for a reader: whole passes, a window inside a pass, or one pass."""
        if any(t.once for t in self.timings):
            return "one pass: the source can be read once"
        passes = sorted(t.passes for t in self.timings if t.passes)
        if not passes:
            return "a window inside one pass" if self.timings else ""
        counts = str(passes[0]) if passes[0] == passes[-1] else f"{passes[0]}-{passes[-1]}"
        windowed = " (or a window inside one)" if len(passes) < len(self.timings) else ""
        return f"{counts} whole pass{'' if passes[-1] == 1 else 'es'}{windowed}"


class _Route(Protocol):
    """How one made iterable is read: ``start()`` begins a pass and returns ``pull(n)``, which takes ``n``
    elements of it and says whether it got them all (False: the pass ended within them); ``whole_pass()`` reads
    a fresh pass to its end and returns its length; ``prepare()`` does the one-off work whole passes need (so
    that it is not timed); ``close()`` ends the pass ``start()`` began."""

    def start(self) -> Callable[[int], bool]: ...

    def close(self) -> None: ...

    def prepare(self) -> None: ...

    def whole_pass(self) -> int: ...


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


class _PythonRoute:
    def __init__(self, made: Iterable[Any]) -> None:
        self.made = made
        self.it: Iterator[Any] | None = None

    def start(self) -> Callable[[int], bool]:
        it = self.it = iter(self.made)

        def pull(n: int) -> bool:
            for _ in range(n):
                try:
                    next(it)
                except StopIteration:
                    return False
            return True

        return pull

    def close(self) -> None:
        _close(self.it)
        self.it = None

    def prepare(self) -> None:
        pass

    def whole_pass(self) -> int:
        it = iter(self.made)
        try:
            return sum(1 for _ in it)
        finally:
            _close(it)


class _GraphRoute:
    """A compiled loop of ``get_next`` for a window (as a training step pulls), and a compiled ``for`` over the
    dataset for a whole pass, which counts its elements."""

    def __init__(self, dataset: Any) -> None:
        import tensorflow as tf

        def pull(iterator: Any, n: Any) -> Any:
            i = tf.constant(0)
            while i < n:
                iterator.get_next()
                i += 1
            return i

        def whole_pass() -> Any:
            n = tf.constant(0)
            for _ in dataset:
                n += 1
            return n

        # not as decorators: tf is untyped, and a decorator would untype them
        self._pull, self._whole_pass = tf.function(pull), tf.function(whole_pass)
        self.dataset, self.iterator = dataset, None

    def start(self) -> Callable[[int], bool]:
        import tensorflow as tf

        iterator = self.iterator = iter(self.dataset)

        def pull(n: int) -> bool:
            try:
                self._pull(iterator, tf.constant(n))
            except tf.errors.OutOfRangeError:
                return False
            return True

        return pull

    def close(self) -> None:
        self.iterator = None

    def prepare(self) -> None:
        self._whole_pass.get_concrete_function()  # traced now, not in the first timed pass

    def whole_pass(self) -> int:
        return int(self._whole_pass())


def rate(make: Callable[[], Iterable[Any]], *, warmup: int, window_s: float, min_elements: int) -> Timing:
    """Elements per second of a fresh ``make()`` after ``warmup`` elements, over at least ``window_s`` seconds
    and ``min_elements`` elements: over whole passes when a pass ends inside the window (the first pass is then
    the warm-up), else over the window inside the first pass."""
    made = make()
    route: _Route = _GraphRoute(made) if type(made).__module__.startswith("tensorflow") else _PythonRoute(made)
    once = isinstance(made, Iterator)  # its one pass is all there is
    one_pass = None  # the first pass after the warm-up, when it ends inside the window
    pull = route.start()
    try:
        got = 0
        while got < warmup and pull(1):
            got += 1
        if got == warmup:
            count, step, began = 0, 1, time.perf_counter()
            elapsed = 0.0
            while True:
                t0 = time.perf_counter()
                if not pull(step):  # the pass ended inside the window; this pull's elements are not counted
                    break
                count += step
                elapsed = time.perf_counter() - began
                if elapsed >= window_s and count >= min_elements:
                    return Timing(count / elapsed, 0)
                step = max(1, min(step * 2, int(step * _PULL_S / max(time.perf_counter() - t0, 1e-6)) or 1))
            got += count
            one_pass = Timing(count / elapsed, 0, once=True) if count else None
    finally:
        route.close()
    if not once:
        route.prepare()
        timing = _whole_passes(route, window_s=window_s, min_elements=min_elements)
        if timing is not None:
            return timing
    if one_pass is None:
        if got == 0:
            msg = "the source gave no elements: there is nothing to time"
        else:
            msg = (
                f"the source can be read once and gave only {got} element{'' if got == 1 else 's'}, all taken by "
                "the warm-up: there is nothing left to time"
            )
        raise ValueError(msg)
    return one_pass


def _whole_passes(route: _Route, *, window_s: float, min_elements: int) -> Timing | None:
    """Whole passes, each from a fresh iterator, until they fill the window; None when a pass gives nothing
    (the source could be read once)."""
    count, passes, began = 0, 0, time.perf_counter()
    while True:
        pulled = route.whole_pass()
        if pulled == 0:
            return None
        count += pulled
        passes += 1
        elapsed = time.perf_counter() - began
        if elapsed >= window_s and count >= min_elements:
            return Timing(count / elapsed, passes)


_RAISED = re.compile(r"(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*): ")  # the last line of a traceback: [module.]Name: ...


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line. A TensorFlow op error raised while pulling says "Graph execution error:"
    first and the error last, often a Python exception re-raised from a ``from_generator`` thread: that one is
    reported (without its module path)."""
    text = str(exc).strip()
    if not text.startswith("Graph execution error"):
        return f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:200]}"
    lines = [line.split("[[")[0].split("[Op:")[0].strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith("Hint:")]
    last = kept[-1] if kept else text
    raised = _RAISED.match(last)
    if raised is not None:
        return f"{raised.group(1)}: {last[raised.end():][:200]}"
    return f"{type(exc).__name__}: {last[:200]}"


def measure(
    name: str, make: Callable[[], Iterable[Any]], *, repeats: int, warmup: int, window_s: float, min_elements: int
) -> Measurement:
    m = Measurement(name)
    for _ in range(repeats):
        try:
            timing = rate(make, warmup=warmup, window_s=window_s, min_elements=min_elements)
        except Exception as exc:  # a method that fails is reported, not hidden
            m.error = _one_line(exc)
            break
        m.timings.append(timing)
        m.rates.append(timing.rate)
        gc.collect()  # a compiled loop's graph holds its dataset in a cycle: each repetition's goes before the next
    return m


def plain_from_generator(source: Any, signature: Any) -> Any:
    """The usual hand-written bridge: one Python generator over the source, in order."""
    import tensorflow as tf

    def gen() -> Any:
        for i in range(len(source)):
            yield source[i]

    return tf.data.Dataset.from_generator(gen, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def plain_stream(source: Any, signature: Any) -> Any:
    """The usual hand-written bridge for a stream: ``from_generator`` over a generator function (called anew each
    pass) or a re-iterable."""
    import tensorflow as tf

    gen = source if callable(source) else (lambda: iter(source))
    return tf.data.Dataset.from_generator(gen, output_signature=signature).prefetch(tf.data.AUTOTUNE)

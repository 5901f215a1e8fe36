"""The benchmark workloads: indexed sources that stand for the usual kinds of __getitem__.

Plain classes (no Keras import), so worker processes start light; `as_keras` wraps one in a PyDataset for
Keras's own conversion.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

LENGTH = 1_000_000  # long enough that no timed window reaches the end of an epoch


def _burn_loops_per_ms() -> float:
    def burn(n: int) -> int:
        s = 0
        for k in range(n):
            s += k * k
        return s

    burn(10_000)
    start = time.perf_counter()
    burn(200_000)
    return 200_000 / ((time.perf_counter() - start) * 1e3)


LOOPS_PER_MS = _burn_loops_per_ms()


def burn(loops: int) -> int:
    """Pure-Python CPU work (holds the GIL); calibrated once in the main process, so every worker process
    does the same amount of work."""
    s = 0
    for k in range(loops):
        s += k * k
    return s


class CpuBound:
    """W1: ~20 ms of pure Python per batch of float32[32, 128]."""

    title = "W1 CPU-bound: 20 ms pure Python per float32[32,128] batch"
    work_ms = 20.0
    shape = (32, 128)

    def __init__(self) -> None:
        self.loops = int(self.work_ms * LOOPS_PER_MS)

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, i: int) -> Any:
        burn(self.loops)
        return np.full(self.shape, i % 1000, np.float32), np.full(self.shape[:1], i % 7, np.int32)


class LatencyBound:
    """W2: waits 10 ms (I/O-like) per batch of float32[32, 128]."""

    title = "W2 latency-bound: sleeps 10 ms per float32[32,128] batch"
    shape = (32, 128)

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, i: int) -> Any:
        time.sleep(0.010)
        return np.full(self.shape, i % 1000, np.float32), np.full(self.shape[:1], i % 7, np.int32)


class BigBatches:
    """W3: float32[64, 224, 224, 3] (38.5 MB), cheap to make."""

    title = "W3 big batches: float32[64,224,224,3] (38.5 MB), cheap to make"
    shape = (64, 224, 224, 3)
    work_ms = 0.0

    def __init__(self) -> None:
        self.loops = int(self.work_ms * LOOPS_PER_MS)

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, i: int) -> Any:
        if self.loops:
            burn(self.loops)
        return np.full(self.shape, i % 255, np.float32), np.full(self.shape[:1], i % 7, np.int32)


class BigCpuBound(BigBatches):
    """W4: the big batches of W3 with ~30 ms of pure-Python work each."""

    title = "W4 big + CPU-bound: float32[64,224,224,3] with 30 ms pure Python"
    work_ms = 30.0


WORKLOADS = [CpuBound, LatencyBound, BigBatches, BigCpuBound]


def as_keras(source: Any, workers: int, use_multiprocessing: bool, max_queue_size: int) -> Any:
    import keras

    class Wrapped(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
            self.source = source

        def __len__(self) -> int:
            return len(self.source)

        def __getitem__(self, i: int) -> Any:
            return self.source[i]

    return Wrapped()

"""One slow element never holds back the finished elements before it (small elements travel in chunks; a chunk
is delivered as soon as the next element keeps the pass waiting)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import tfbridge as tb


class Gated:
    """40 small examples; element 20 waits until the test opens the gate (at most 30 s, then it fails)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        if i == 20 and not self.gate.wait(30):
            raise RuntimeError("element 20 was never released: the elements before it were held back")
        return np.float32(i), np.int64(i)


@pytest.mark.parametrize("workers", [1, 2])
def test_elements_before_a_slow_one_arrive_while_it_is_made(workers: int) -> None:
    src = Gated()
    it = iter(tb.to_dataset(src, executor="thread", workers=workers, batched=False))
    first = [int(next(it)[1]) for _ in range(20)]  # all made before element 20, which waits for the gate
    assert first == list(range(20))
    src.gate.set()
    assert [int(y) for _, y in it] == list(range(20, 40))


def test_worker_processes_deliver_the_elements_before_a_slow_one_while_it_is_made(tmp_path: Any) -> None:
    from _sources import FileGated

    gate = tmp_path / "gate"
    it = iter(tb.to_dataset(FileGated(str(gate)), executor="process", workers=2, batched=False, timeout=60))
    assert [int(next(it)[1]) for _ in range(20)] == list(range(20))
    gate.touch()
    assert [int(y) for _, y in it] == list(range(20, 40))


class HeldBack:
    """Elements of three kinds (``kind``): small examples (they travel in chunks), batches of 0.5 MB (one at a
    time), or token sequences of 1 to 7 ids (for buckets). Element ``at`` (which the peek does not read) creates
    the file ``gate + ".entered"``, then waits until the file ``gate`` exists (at most 30 s, then it fails)."""

    def __init__(self, gate: str, kind: str, n: int, at: int) -> None:
        self.gate, self.kind, self.n, self.at = gate, kind, n, at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        import os
        import time

        if i == self.at:
            open(self.gate + ".entered", "w").close()
            deadline = time.monotonic() + 30
            while not os.path.exists(self.gate):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"element {i} was never released")
                time.sleep(0.01)
        if self.kind == "big":
            return np.full((64, 2048), i, np.float32), np.full((64,), i, np.int64)
        if self.kind == "tokens":
            return np.arange(1 + i % 7, dtype=np.int32), np.int64(i)
        return np.float32(i), np.int64(i)


@pytest.mark.parametrize("route", ["chunks", "big", "buckets"])
def test_dropping_an_iterator_while_a_worker_makes_an_element_neither_waits_for_it_nor_leaves_the_worker(
    route: str, tmp_path: Any
) -> None:
    """The pass's step returns to TensorFlow while an element keeps it waiting, and is asked again: an iterator
    dropped meanwhile goes at once (TensorFlow waits for a step in progress before it lets an iterator go), and
    the dataset's workers with it. Before, dropping it waited until the element was made (forever for a hung
    one; 30 s here, when the held-back element gives up)."""
    import gc
    import os
    import time

    from _leaks import wait_exit

    from tfbridge.sources._positions import passes_in

    gate = str(tmp_path / "gate")
    if route == "chunks":  # peeked at 0, 6, 11, 17, 22, 28, 33, 39
        ds = tb.to_dataset(HeldBack(gate, "small", 40, 20), executor="process", workers=2, batched=False)
        before = 20
    elif route == "big":  # peeked at 0, 2, 3, 5, 6, 8, 9, 11
        ds = tb.to_dataset(HeldBack(gate, "big", 12, 7), executor="process", workers=2, batched=True)
        before = 7
    else:  # four buckets fill before element 20 (at elements 8, 10, 11 and 19): the fifth batch needs it
        ds = tb.pad_batch(HeldBack(gate, "tokens", 40, 20), 4, buckets=[3, 5], executor="process", workers=2)
        before = 4
    it = iter(ds)
    for _ in range(before):
        next(it)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate + ".entered"):  # a worker is making the held-back element
        assert time.monotonic() < deadline, "the held-back element was never asked for"
        time.sleep(0.01)
    pids = [pid for passes in passes_in(ds) for pid in passes.feed.runner.pids()]
    assert pids, "the workers are running"
    started = time.monotonic()
    del it, ds  # in this thread, as a script does (TensorFlow lets one dropped in another thread go at once)
    gc.collect()
    took = time.monotonic() - started
    assert took < 10, f"dropping the iterator waited {took:.1f} s for the element being made"
    assert all(wait_exit(pid, 20) for pid in pids), "the workers went with the dataset"

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

"""Cheap elements travel to worker processes in groups (one message, one reply for several): the same elements
in the same order with the same per-element seeds as one by one, partial groups before an error, errors and
worker deaths that name the element, and the group size the executor is made with."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fault_sources import FailsOnceAt, KillsItselfAt
from _leaks import children

import tfbridge as tb
from tfbridge import executors
from tfbridge.executors import ExecutorOptions, ProcessExecutor
from tfbridge.sources import adapt
from tfbridge.sources._positions import passes_in

pytestmark = pytest.mark.timeout(180)

_NEVER = Path("/nonexistent/never")


class Draws:
    """Element i: its index and a draw from each global RNG (numpy's legacy one and ``random``)."""

    def __len__(self) -> int:
        return 200

    def __getitem__(self, i: int) -> Any:
        import random

        return np.array([i, np.random.randint(1 << 30), random.randrange(1 << 30)], np.int64)


class Unpicklable:
    def __len__(self) -> int:
        return 200

    def __getitem__(self, i: int) -> Any:
        return threading.Lock() if i == 13 else np.int64(i)


def _run(group: int, order: list[int], source: Any = None, seeds: tuple[int, int] = (7, 0)) -> list[Any]:
    ex = ProcessExecutor(2, group=group)
    try:
        task = (source or Draws()).__getitem__
        return [v.tolist() for v in ex.imap(task, order, seeds=seeds)]
    finally:
        ex.close()


def test_groups_give_the_same_elements_in_the_same_order_with_the_same_seeds_as_one_by_one() -> None:
    order = list(np.random.default_rng(3).permutation(200))
    one_by_one = _run(1, order)
    assert [v[0] for v in one_by_one] == order
    assert len({v[1] for v in one_by_one}) == 200, "each element draws from its own seed"
    for group in (3, 8, 64):  # 64: cut to 8, so that the pass is two rounds of the 12 slots
        assert _run(group, order) == one_by_one, f"group {group}"
    assert _run(7, order, seeds=(7, 1)) != one_by_one, "another epoch, other draws"


def test_an_error_inside_a_group_comes_after_every_element_before_it_and_names_its_own_index() -> None:
    ex = ProcessExecutor(2, group=8)
    got: list[int] = []
    try:
        with pytest.raises(tb.SourceError, match="corrupt record 21") as info:
            for value in ex.imap(adapt(FailsOnceAt(200, 21, _NEVER), batched=True).task(None), range(200)):
                got.append(int(np.asarray(value)[0]))
        assert info.value.index == 21
        assert got == list(range(21)), "the group's elements before the error are delivered, once, in order"
        assert sorted(
            int(np.asarray(v)[0])
            for v in ex.imap(adapt(FailsOnceAt(200, -1, _NEVER), batched=True).task(None), range(200))
        ) == list(range(200)), "the next pass is whole"
    finally:
        ex.close()


def test_a_value_that_cannot_travel_is_named_by_its_own_index_not_its_group() -> None:
    ex = ProcessExecutor(2, group=8)
    got: list[int] = []
    try:
        with pytest.raises(tb.SourceError) as info:
            got.extend(int(v) for v in ex.imap(Unpicklable().__getitem__, range(200)))
        assert info.value.index == 13
        assert "lock" in str(info.value).lower()
        assert got == list(range(13)), "every element before it is delivered, its group's included"
    finally:
        ex.close()


@pytest.mark.timeout(240)
def test_a_worker_killed_inside_a_group_is_worker_died_error_naming_the_group() -> None:
    before = children()
    ex = ProcessExecutor(2, group=5)
    try:
        died = r"SIGKILL while producing element 20 or one of the 4 sent with it"
        with pytest.raises(tb.WorkerDiedError, match=died) as info:
            list(ex.imap(adapt(KillsItselfAt(150, 22), batched=True).task(None), range(150)))
        assert info.value.index == 20
        assert children() <= before, "the broken pool is shut down at once"
    finally:
        ex.close()


def test_group_size_follows_the_cost_and_is_one_where_each_element_needs_its_own_deadline() -> None:
    plain = ExecutorOptions()
    assert executors.group_size(20e-6, 500, plain) == 64  # 2 ms of 20 us elements is 100: at most 64
    assert executors.group_size(0.5e-3, 500, plain) == 4
    assert executors.group_size(5e-3, 500, plain) == 1, "costly elements go one by one"
    assert executors.group_size(20e-6, 300_000, plain) == 3, "at most 1 MB of elements in a message"
    assert executors.group_size(20e-6, 2 << 20, plain) == 1
    assert executors.group_size(0.0, 500, plain) == 1, "no cost measured: one by one"
    assert executors.group_size(20e-6, 500, ExecutorOptions(timeout=5.0)) == 1
    assert executors.group_size(20e-6, 500, ExecutorOptions("process", max_elements_per_worker=10)) == 1
    assert executors.group_size(20e-6, 500, ExecutorOptions("process", max_worker_rss=1 << 30)) == 1


@pytest.mark.parametrize("option", [{"timeout": 30.0}, {"max_elements_per_worker": 50}, {"max_worker_rss": 4 << 30}])
def test_a_timeout_or_worker_recycling_keeps_one_element_per_message_whatever_group_was_asked(option: Any) -> None:
    ex = ProcessExecutor(2, group=16, **option)
    try:
        assert [int(v) for v in ex.imap(abs, range(400))] == list(range(400))
        assert ex._pools[0].group == 1
    finally:
        ex.close()


def test_a_cheap_source_under_process_workers_travels_in_groups_end_to_end() -> None:
    class Cheap:
        def __len__(self) -> int:
            return 300

        def __getitem__(self, i: int) -> Any:
            return np.arange(i % 5 + 1, dtype=np.int32), np.int32(i)

    ds = tb.to_dataset(Cheap(), executor="process", workers=2)
    [passes] = passes_in(ds)
    assert passes.feed.runner.group > 1, "elements this cheap travel in groups"
    assert [int(y) for _, y in ds] == list(range(300))
    batches = list(tb.pad_batch(Cheap(), 32, buckets=[3], executor="process", workers=2))
    assert sorted(int(v) for _, y in batches for v in y.numpy()) == list(range(300))

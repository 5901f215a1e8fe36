"""executor="ray": a real local Ray (ray.init), same content and order as serial, errors, lost and hung workers,
early stops. The sources Ray's workers unpickle come from TF-free modules (_sources.py, _fault_sources.py): one
defined here would make every Ray worker import this module, and TensorFlow with it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _fault_sources import DiesAway, HangsAway, RaisesAway
from _sources import Counting, Deterministic

import tfbridge as tb

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _epochs(ds: Any, n: int) -> list[list[Any]]:
    return [[tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds] for _ in range(n)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ray_executor_gives_the_serial_content_in_order_over_epochs(shuffle: bool) -> None:
    reference = _epochs(tb.to_dataset(Deterministic(23, 4, 50), executor="serial", shuffle=shuffle, seed=5), 3)
    got = _epochs(tb.to_dataset(Deterministic(23, 4, 50), executor="ray", shuffle=shuffle, seed=5), 3)
    # on_epoch_end reversed the order between epochs, and Ray's tasks saw the new state
    assert [int(e[0]["n"][0]) for e in got[0]] != [int(e[0]["n"][0]) for e in got[1]]
    for epoch_ref, epoch in zip(reference, got, strict=True):
        assert len(epoch) == 23
        for a, b in zip(epoch_ref, epoch, strict=True):
            for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
                np.testing.assert_array_equal(x, y)


def test_ray_task_exception_becomes_source_error_with_index_and_remote_traceback() -> None:
    ds = tb.to_dataset(RaisesAway(30, 17), executor="ray", workers=2, batched=False)
    seen = []
    with pytest.raises(tf.errors.OpError) as info:
        for x in ds:
            seen.append(int(x[0]))
    assert seen == list(range(17))  # everything before the failing element, once, in order
    message = info.value.message
    assert "SourceError: element 17: ValueError: corrupt record 17" in message
    assert "its traceback" in message and "__getitem__" in message


def test_ray_worker_killed_becomes_worker_died_error_naming_the_element() -> None:
    ds = tb.to_dataset(DiesAway(12, 6), executor="ray", batched=False)
    with pytest.raises(tf.errors.OpError) as info:
        for _ in ds:
            pass
    message = info.value.message
    assert "WorkerDiedError: the Ray worker producing element 6 was lost" in message
    assert "Hint:" in message
    # the cluster is still usable afterwards
    assert [int(e[0]["n"][0]) for e in tb.to_dataset(Deterministic(4), executor="ray")] == [0, 1, 2, 3]


def test_ray_hanging_task_with_timeout_becomes_element_timeout_error() -> None:
    warm = tb.to_dataset(HangsAway(10, -1), executor="ray", batched=False)
    assert len(list(warm)) == 10  # Ray's workers are up and have the module: the timeout only counts the hang
    ds = tb.to_dataset(HangsAway(10, 4), executor="ray", batched=False, timeout=4)
    seen = []
    with pytest.raises(tf.errors.OpError) as info:
        for x in ds:
            seen.append(int(x[0]))
    assert seen == [0, 1, 2, 3]
    assert "ElementTimeoutError: element 4 was not ready within timeout=4 s" in info.value.message
    assert "its Ray task had not finished and has been cancelled" in info.value.message


def test_ray_early_stop_cancels_outstanding_work_and_the_next_pass_is_whole() -> None:
    ds = tb.to_dataset(Deterministic(40), executor="ray", workers=2)
    taken = [int(e[0]["n"][0]) for e in ds.take(3)]
    assert taken == [0, 1, 2]
    assert len([e for e in ds]) == 40



def test_ray_passes_at_the_same_time_each_deliver_every_element_once_in_their_own_order() -> None:
    """``it1 = iter(ds); next(it1); list(iter(ds)); list(it1)``, as Keras does when it validates on the dataset it
    trains on with a shorter steps_per_epoch; shuffled, so each pass has its own order."""

    def labels(it: Any) -> list[int]:
        return [int(y.numpy()[0]) for _, y in it]

    reference = tb.to_dataset(Counting(300), executor="serial", batched=True, shuffle=True, seed=8)
    first_order, second_order = labels(reference), labels(reference)
    source = Counting(300)
    ds = tb.to_dataset(source, executor="ray", workers=2, batched=True, shuffle=True, seed=8)
    it1 = iter(ds)
    first = labels([next(it1)])
    second = labels(iter(ds))
    assert source.ends == 1, "the first pass was still running while the second ran whole"
    first += labels(it1)
    assert first == first_order and second == second_order and first != second
    assert sorted(first) == list(range(300))

def test_ray_executor_refuses_an_unpicklable_source_before_iterating() -> None:
    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return np.zeros((2, 2))

    with pytest.raises(tb.TfBridgeError, match="cannot be sent to worker processes") as info:
        tb.to_dataset(Locked(), executor="ray")
    assert "Hint:" in str(info.value)


def test_ray_missing_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to import
    with pytest.raises(tb.TfBridgeError, match=r'executor="ray" needs the optional package \'ray\'') as info:
        tb.to_dataset(Deterministic(), executor="ray")
    assert 'pip install "tfbridge[ray]"' in str(info.value)

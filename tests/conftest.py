"""Shared fixtures: quiet TensorFlow, and the leak check that runs after every test.

``nothing_left_behind`` is autouse and applies to every test of the suite, not only to the tests that start
worker processes, threads or Ray (so none can forget it). After the test it checks, not assumes, that nothing
new is left compared with just before it:

- no child process, zombies included (read from ``/proc/self/task/*/children``);
- no memfd descriptor (``/proc/self/fd``) and no tfbridge slot mapping (``/proc/self/maps``);
- nothing new in ``/dev/shm``;
- no thread whose name starts with ``tfbridge``.

A dataset that the test dropped only goes away at the next garbage collection, and a stopped pool takes a
moment to join its workers: when something is left, the fixture collects garbage and waits (on pidfds and
``Thread.join``, polling with a deadline of ``_LEFT_BEHIND_WAIT_S``) before it fails. When nothing is left it
costs a few reads of /proc and no garbage collection.

Things started by module-scoped fixtures (the local Ray instance in test_ray.py, the tf.data service servers
in test_service.py) exist before the test starts and are not counted; their fixtures stop them.

Worker-side test sources (anything a worker process or a Ray worker unpickles) live in TF-free modules,
``_sources.py`` and ``_fault_sources.py``: a class defined in a test module is pickled by reference to that
module, whose ``import tensorflow`` would then run in every worker.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from _leaks import Snapshot, pool_holders, wait_exit

_LEFT_BEHIND_WAIT_S = 20.0
_POLL_S = 0.2


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = Snapshot.take()
    yield
    deadline = time.monotonic() + _LEFT_BEHIND_WAIT_S
    left = Snapshot.take().new_since(before)
    while left and time.monotonic() < deadline:
        gc.collect()  # the test's datasets are gone: their executors close
        now = Snapshot.take()
        step = min(_POLL_S, max(0.0, deadline - time.monotonic()))
        for pid in now.children - before.children:  # a stopped pool joins its workers
            wait_exit(pid, step)
        for t in now.threads - before.threads:  # pool threads leave once told to stop; a released call returns
            t.join(step)
        left = Snapshot.take().new_since(before)
    if left:
        pytest.fail("left behind by the test: " + "; ".join(left + pool_holders()), pytrace=False)

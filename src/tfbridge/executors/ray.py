"""Ray tasks: a Python source's elements produced on a Ray cluster (a local one by default).

Each element is one Ray task running the same picklable task the process executor sends to its workers (the
source and its conformer, put in the object store once per pass). A bounded window of tasks is in flight;
results are fetched in order, so delivery, epochs and ``on_epoch_end`` behave as with the other executors.
A task that raises comes back as the tfbridge error it raised (SourceError with the worker's traceback); a
worker, node or object that is lost becomes WorkerDiedError naming the element. Tasks are not retried: a
source's ``__getitem__`` may have side effects, and a loss should be seen, not hidden.

Ray is started with ``ray.init`` on first use unless it is already running in this process: a local instance
with one CPU per worker, or the cluster at ``address`` (``ray_address=``, or the RAY_ADDRESS environment
variable that Ray itself reads).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from tfbridge._checks import worker_died_hint
from tfbridge.errors import TfBridgeError, WorkerDiedError
from tfbridge.executors._base import IN_FLIGHT_PER_WORKER, STALL, Task, timeout_error

_FETCH_POLL_S = 0.1
_TASKS_KEPT = 4


def _ray() -> Any:
    from tfbridge._deps import optional

    return optional("ray", purpose='executor="ray"')


_TASKS: dict[bytes, Task] = {}  # in a Ray worker: tasks already unpickled, by digest


def _run(payload: tuple[bytes, list[str], bytes], index: int, seeds: tuple[int, int] | None = None) -> Any:
    """Runs in a Ray worker: element ``index``, with ``random`` and ``numpy.random`` seeded from the pass's
    ``seeds`` (seed, epoch) and the index, as the process executor's workers do."""
    from tfbridge.errors import SourceError
    from tfbridge.executors._worker import Seeder
    from tfbridge.sources._base import remote_error

    digest, driver_path, blob = payload
    task = _TASKS.get(digest)
    if task is None:
        # the source may live in a module beside the user's script (or a test file): importable here only
        # with the driver's sys.path, as for the process executor's workers
        sys.path.extend(p for p in driver_path if p not in sys.path)
        task = _TASKS[digest] = pickle.loads(blob)
        while len(_TASKS) > _TASKS_KEPT:
            _TASKS.pop(next(iter(_TASKS)))
    if seeds is not None:
        Seeder(*seeds)(index)
    try:
        return task(index)
    except SourceError as exc:
        raise remote_error(exc, index) from None


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, timeout: float | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._requested = workers or None
        self.workers = workers or 0
        self._remote: Any = None

    def connect(self) -> None:
        """Start or reach Ray now, in the calling thread. Ray ties the processes it starts to the thread that
        started them: started from tf.data's generator thread, they die with it and take the program down."""
        self._connect()

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.address is not None:
                kwargs["address"] = self.address
            elif self._requested is not None and "RAY_ADDRESS" not in os.environ:
                kwargs["num_cpus"] = self._requested  # a new local instance; a cluster has its own CPUs
            try:
                ray.init(**kwargs)
            except Exception as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                msg = (
                    f"could not start or reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}\n"
                    "Hint: check ray_address= (e.g. 'ray://head:10001' or 'auto'), or start Ray yourself with "
                    "ray.init(...) before iterating."
                )
                raise TfBridgeError(msg) from exc
        if not self.workers:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=0)(_run)
        return ray

    def imap(
        self, task: Task, indices: Sequence[int], stall_s: float | None = None, *, seeds: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        ray = self._connect()
        from tfbridge.executors.processes import dumps_task

        blob = dumps_task(task)
        task_ref = ray.put((hashlib.sha256(blob).digest(), list(sys.path), blob))
        in_flight = self.workers * IN_FLIGHT_PER_WORKER
        pending: deque[tuple[int, Any]] = deque()
        todo = iter(indices)
        try:
            for i in todo:
                pending.append((i, self._remote.remote(task_ref, i, seeds)))
                if len(pending) >= in_flight:
                    break
            while pending:
                index, ref = pending[0]
                waited_from = time.monotonic()
                while stall_s is not None and not ray.wait([ref], timeout=stall_s)[0]:
                    if self.timeout is not None and time.monotonic() - waited_from >= self.timeout:
                        break  # its deadline passed: _fetch says so
                    yield STALL  # the consumer may deliver what it holds (or step out) while this element is made
                value = self._fetch(ray, index, ref, waited_from)
                pending.popleft()
                for i in todo:
                    pending.append((i, self._remote.remote(task_ref, i, seeds)))
                    break
                yield value
        finally:
            for _, ref in pending:  # early stop: nobody will read these (running ones finish, unread)
                with contextlib.suppress(Exception):  # already finished or already gone
                    ray.cancel(ref)

    def _fetch(self, ray: Any, index: int, ref: Any, started: float) -> Any:
        """The value of element ``index``, waited for since ``started`` (its deadline counts from then)."""
        errors = ray.exceptions
        while True:
            poll_s = _FETCH_POLL_S if self.timeout is None else min(_FETCH_POLL_S, self.timeout)
            ready, _ = ray.wait([ref], timeout=poll_s)
            if ready:
                break
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                # a hung task holds its worker: only killing it frees it (it may have just finished or gone)
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                raise timeout_error(index, self.timeout, "its Ray task had not finished and has been cancelled")
        try:
            return ray.get(ref)
        except errors.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, TfBridgeError):
                raise cause from None
            from tfbridge.sources._base import remote_error

            raise remote_error(cause, index) from None
        except errors.RayError as exc:  # a lost worker, node or object; out of memory; Ray itself failing
            msg = (
                f"the Ray worker producing element {index} was lost ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}).\n"
                f"{worker_died_hint(ray=True)}"
            )
            raise WorkerDiedError(msg, index=index) from None

    def close(self) -> None:
        """Ray stays up (it may be shared with the user's own work); nothing of ours is left in flight."""
        self._remote = None

"""A worker process: ``python -m tfbridge.executors._worker FD``.

Started as a fresh interpreter (never forked from a process that has TensorFlow loaded, never re-running the
user's ``__main__``), it talks to the main process over one socket: it receives the task (cloudpickled),
epoch seeds and element indices, and sends back results whose big arrays it has written into the shared
memory slot the main process named. It ignores Ctrl-C (the main process decides) and exits when the socket
closes.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any


def _seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))


def serve(conn: Connection) -> None:
    from tfbridge.errors import TfBridgeError
    from tfbridge.executors._shm import SlotMap, dumps_result
    from tfbridge.sources._base import remote_error

    hello = pickle.loads(conn.recv_bytes())
    sys.path[:] = hello["sys_path"]
    slots = [SlotMap(fd) for fd in hello["slot_fds"]]
    task: Any = None
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "task":
            import cloudpickle  # noqa: F401  (cloudpickle output loads with plain pickle once importable)

            try:
                task = pickle.loads(message[1])
            except Exception as exc:  # the source does not unpickle here: every element fails with it
                task = _Broken(exc)
            continue
        if kind == "seed":
            _seed_everything(message[1])
            continue
        _, index, slot = message  # "run"
        try:
            value = task(index)
            reply = ("ok", index, dumps_result(value, slots[slot], slot))
        except TfBridgeError as exc:
            reply = ("err", index, _picklable(remote_error(exc, index), index))
        except Exception as exc:
            reply = ("err", index, _picklable(remote_error(exc, index), index))
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return


class _Broken:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self, index: int) -> Any:
        from tfbridge.sources._base import source_error

        raise source_error(self.exc, index, remote=True)


def _picklable(exc: BaseException, index: int) -> bytes:
    from tfbridge.errors import SourceError

    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(SourceError(str(exc), index=index))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown (seconds when the source imported TensorFlow)


if __name__ == "__main__":
    main()

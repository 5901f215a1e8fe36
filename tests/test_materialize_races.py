"""Two materialize runs on one path (the second waits for the first's lock, then reuses its data) and a full disk
(a clear error, the parts written before it kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import tfbridge as tb
from tfbridge.materialize import run


class Held:
    """24 examples; element 5 waits until the test lets it go (at most 60 s)."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> Any:
        if i == 5 and not self.go.wait(60):
            raise RuntimeError("never let go")
        return np.full((3,), i, np.float32), np.int64(i)


def _waiters_on(lock: Path, deadline_s: float) -> bool:
    """Whether some open file waits for a flock on ``lock`` (/proc/locks lists waiters with '->')."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if lock.exists():
            inode = os.stat(lock).st_ino
            for line in Path("/proc/locks").read_text().splitlines():
                if "->" in line and line.split()[-3].endswith(f":{inode}"):
                    return True
        time.sleep(0.02)  # polling an observable condition with a deadline
    return False


def test_a_second_run_on_the_path_waits_for_the_first_then_reuses_its_data(tmp_path: Path) -> None:
    first_src, second_src = Held(), Held()
    second_src.go.set()
    outcomes: dict[str, Any] = {}

    def materialize(name: str, src: Held) -> None:
        try:
            outcomes[name] = run(src, tmp_path / "m", executor="serial", batched=False, verbose=False)
        except BaseException as exc:  # reported by the asserts below
            outcomes[name] = exc

    first = threading.Thread(target=materialize, args=("first", first_src))
    first.start()
    lock = tmp_path / "m" / ".tfbridge-lock"
    second = threading.Thread(target=materialize, args=("second", second_src))
    end = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < end:
        time.sleep(0.02)
    second.start()
    assert _waiters_on(lock, 60), "the second run did not wait for the first one's lock"
    first_src.go.set()
    first.join(120)
    second.join(120)
    assert not first.is_alive() and not second.is_alive()
    assert not outcomes["first"].reused and outcomes["first"].elements == 24
    assert outcomes["second"].reused and outcomes["second"].elements == 24
    assert [int(y) for _, y in outcomes["second"].dataset] == list(range(24))


def test_a_full_disk_is_a_clear_error_and_a_later_run_continues(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        import numpy as np
        import tfbridge as tb
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        x = np.ones((200, 1000), np.float32)
        try:
            tb.materialize((x,), sys.argv[1], executor="serial")
        except tb.TfBridgeError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m")], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"writing part-00000 of {tmp_path / 'm'} failed: File too large.")
    assert "run again: a new run on the same path continues" in out.stdout
    assert not list((tmp_path / "m" / "parts").glob("*.tmp*"))  # nothing half-written is left
    ds = tb.materialize((np.ones((200, 1000), np.float32),), tmp_path / "m", executor="serial")
    assert sum(1 for _ in ds) == 200

"""A script whose pass failed (ElementTimeoutError) exits: the iterator can be dropped, or left to the end of the
interpreter, right after the error, without a deadlock between tf.data's prefetch thread and Python.

Before the fix, dropping the iterator at once hung 2 runs in 6 (serial) and the Keras script below 1 in 12."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import tfbridge as tb

    class H:
        def __len__(self):
            return 32

        def __getitem__(self, i):
            if i == 9:
                time.sleep(120)  # hung far longer than the test waits
            return np.full((4,), i, np.float32), np.float32(i)

    executor, how = sys.argv[1], sys.argv[2]
    ds = tb.to_dataset(H(), executor=executor, peek=4, timeout=1, batch_size=4)
    if how == "fit":
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        try:
            model.fit(ds, epochs=1, verbose=0)
        except Exception as exc:
            print("failed:", "ElementTimeoutError" in str(exc), flush=True)
    else:
        it = iter(ds)
        try:
            for _ in it:
                pass
        except Exception as exc:
            print("failed:", "ElementTimeoutError" in str(exc), flush=True)
        cycle = [it, ds]
        cycle.append(cycle)  # kept alive by a cycle, as a caught error's frames keep it
        del it, cycle, ds
    print("done", flush=True)
    """
)


def _run(path: Path, executor: str, how: str) -> tuple[int | None, str]:
    try:
        out = subprocess.run(
            [sys.executable, str(path), executor, how], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "still running after 60 s"
    return out.returncode, out.stdout


@pytest.mark.parametrize("executor", ["serial", "thread"])
def test_a_script_exits_after_element_timeout_error_every_time(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "hangs_at_9.py"
    path.write_text(_SCRIPT)
    runs = ["drop"] * 5 + ["fit"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda how: _run(path, executor, how), runs))
    for how, (code, out) in zip(runs, results, strict=True):
        assert code == 0, f"{how}: exit status {code}: {out}"
        assert out.splitlines() == ["failed: True", "done"], how

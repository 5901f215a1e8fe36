"""benchmarks/gpu.py's CPU mode, as CI runs it: a few training steps per method on a tiny model, each method's
line well-formed (steps done, a positive rate, a share of waiting between 0 and 1). It checks the script runs
and reports, not how fast anything is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
_METHODS = ("tfbridge auto", "plain from_generator", "native tf.data")
_STEPS = 3
_TIMEOUT_S = 240
_HEADER = re.compile(
    r"^gpu\.py: mode=cpu device=CPU steps=(\d+) warmup=\d+ batch=32 image=224x224 conv_filters=[\d,]+ methods=(\d+)$"
)
_LINE = re.compile(
    r'^method="(?P<name>[^"]+)" steps=(?P<steps>\d+) steps_per_s=(?P<rate>\d+\.\d{3}) '
    r"input_wait=(?P<wait>\d\.\d{3}) first_batch_s=(?P<first>\d+\.\d{3}) step_s=(?P<step>\d+\.\d{4})$"
)


def _run(args: list[str]) -> tuple[int, str, str]:
    """The script in its own session; on a timeout every process of that session is killed (nothing is left)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        [sys.executable, str(_SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"gpu.py --cpu did not finish in {_TIMEOUT_S} s:\n{out}\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.mark.timeout(_TIMEOUT_S + 60)
def test_the_cpu_mode_trains_with_each_method_and_prints_one_well_formed_line_per_method() -> None:
    status, out, err = _run(["--cpu", "--steps", str(_STEPS), "--methods", ",".join(_METHODS)])

    assert status == 0, f"{out}\n{err[-3000:]}"
    lines = [line for line in out.splitlines() if line.strip()]
    header = _HEADER.match(lines[0])
    assert header is not None, lines[0]
    assert int(header.group(1)) == _STEPS and int(header.group(2)) == len(_METHODS)
    rows = [_LINE.match(line) for line in lines[1:]]
    assert all(rows), "\n".join(line for line, row in zip(lines[1:], rows, strict=True) if row is None)
    names = [row.group("name") for row in rows if row]
    assert names[0] == "no input (one batch again)"
    assert len(names) == 1 + len(_METHODS)
    for prefix, name in zip(_METHODS, names[1:], strict=True):
        assert name.startswith(prefix)
    for row in rows:
        assert row is not None
        assert int(row.group("steps")) == _STEPS
        assert float(row.group("rate")) > 0 and float(row.group("step")) > 0
        assert 0.0 <= float(row.group("wait")) <= 1.0
        assert float(row.group("first")) >= 0.0


def test_an_unknown_method_prefix_runs_no_method_and_says_so() -> None:
    status, out, err = _run(["--cpu", "--steps", "1", "--methods", "no such method"])

    assert status == 2, f"{out}\n{err[-3000:]}"
    assert "no method matches" in err

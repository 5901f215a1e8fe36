"""CLI targets given as FILE.py:OBJECT work with every executor: worker processes import the file as the module
its name says, as they do for MODULE:OBJECT."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SOURCE = textwrap.dedent(
    """
    import numpy as np

    class Slowish:
        def __len__(self):
            return 12

        def __getitem__(self, i):
            sum(k * k for k in range(20_000))  # CPU-bound Python: auto picks processes on 2 cores
            return np.full((4, 3), i, np.float32), np.full((4,), i % 2)

    def slow():
        return Slowish()
    """
)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "tfbridge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("form", ["file", "module"])
def test_file_and_module_targets_run_on_worker_processes(tmp_path: Path, form: str) -> None:
    (tmp_path / "slowish_data.py").write_text(_SOURCE)
    target = str(tmp_path / "slowish_data.py") + ":slow" if form == "file" else "slowish_data:slow"
    inspected = _cli("inspect", target, "--full", "--executor", "process", "--workers", "2", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert "scanned:  every element (12)" in inspected.stdout
    written = _cli("materialize", target, str(tmp_path / "out"), "--executor", "process", "--workers", "2",
                   cwd=tmp_path)  # fmt: skip
    assert written.returncode == 0, written.stderr[-2000:]
    assert "wrote 12 elements" in written.stdout


def test_a_file_whose_name_is_taken_is_loaded_privately_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "json.py").write_text(_SOURCE)
    result = _cli("inspect", str(tmp_path / "files" / "json.py") + ":slow", "--executor", "thread", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is loaded as '_tfbridge_target_json' because the module name 'json' is taken" in result.stderr

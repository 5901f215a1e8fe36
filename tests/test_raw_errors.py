"""Errors that used to be raw: SystemExit/BaseException from the source's code, float128 data, a CLI target that
prints to stdout or exits while it is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from _sources import ExitsAt3

import tfbridge as tb


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
@pytest.mark.parametrize("base", [False, True])
def test_system_exit_or_base_exception_in_getitem_is_a_source_error_naming_the_element(
    executor: str, base: bool
) -> None:
    ds = tb.to_dataset(ExitsAt3(base), batched=False, executor=executor, peek=2, timeout=60)
    what = "BaseException: a bare BaseException" if base else "SystemExit: 3"
    with pytest.raises(tf.errors.OpError, match=f"SourceError: element 3: {what}"):
        list(ds)
    with pytest.raises(tf.errors.OpError, match="element 3"):  # the next pass works, up to the same element
        list(ds)


def test_system_exit_while_peeking_is_a_source_error_too() -> None:
    with pytest.raises(tb.SourceError, match="element 3: SystemExit: 3"):
        tb.infer_spec(ExitsAt3(), batched=False, peek=10)


def test_float128_data_is_refused_when_the_spec_is_inferred() -> None:
    with pytest.raises(tb.SpecInferenceError, match=r"dtype float128 has no TensorFlow equivalent \(TensorFlow's "
                                                     r"widest float is float64\).*astype\(np.float64\)"):
        tb.to_dataset((np.ones((4, 3), np.longdouble),))

    class Rows:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> np.ndarray:
            return np.ones((3,), np.longdouble)

    with pytest.raises(tb.SpecInferenceError, match="float128 has no TensorFlow equivalent"):
        tb.infer_spec(Rows(), batched=False)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfbridge.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_inspect_json_stays_valid_json_when_the_target_prints(tmp_path: Path, executor: str) -> None:
    (tmp_path / "noisy_src.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            print("hello from the target")

            class Noisy:
                def __len__(self):
                    return 4

                def __getitem__(self, i):
                    print("getting", i)
                    return np.float32(i), np.int64(i)

            src = Noisy()
            """
        )
    )
    out = _cli(tmp_path, "inspect", "noisy_src.py:src", "--json", "--batched", "no", "--full", "--executor", executor)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["source"] and "hello from the target" in out.stderr and "getting 3" in out.stderr
    code = _cli(tmp_path, "code", "noisy_src.py:src", "--batched", "no")
    assert code.returncode == 0 and "hello" not in code.stdout
    compile(code.stdout, "generated", "exec")


def test_a_target_calling_sys_exit_while_imported_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "exits_src.py").write_text("import sys\nsys.exit(3)\n")
    out = _cli(tmp_path, "inspect", "exits_src.py:src")
    assert out.returncode == 2
    assert "tfbridge: error: exits_src.py raised SystemExit while loading: 3" in out.stderr
    out = _cli(tmp_path, "inspect", "exits_src:src")
    assert out.returncode == 2
    assert "tfbridge: error: module 'exits_src' raised SystemExit while importing: 3" in out.stderr

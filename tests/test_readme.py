"""The README's Python examples run as pasted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    try:
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    finally:
        # TensorFlow keeps a dataset's generator callable for good, and with it the example's source class and
        # this namespace: its datasets (and their worker processes) only go when the names are dropped, as a
        # script's go when it ends
        namespace.clear()
    out = capsys.readouterr().out
    assert out, "every README example prints what it shows"


def test_readme_has_examples_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(BLOCKS) >= 3
    head = text[: text.index("## ")]
    assert "make demo" in head and "make test" in head


def test_the_api_reference_is_generated_from_the_current_docstrings() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "gen_api_docs.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\nHint: run python scripts/gen_api_docs.py"

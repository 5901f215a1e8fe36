"""executor="ray" with no ray.init() before: tfbridge starts a local Ray in the thread that builds the dataset,
and the program runs to its end (Ray started from tf.data's generator thread took the whole process down)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import tfbridge as tb
    from _sources import Listed
    import numpy as np

    ds = tb.to_dataset(Listed([np.full((2, 3), i) for i in range(6)]), batched=True, executor="ray", workers=2)
    print("dataset made", flush=True)
    for _ in range(2):
        print([int(x[0, 0]) for x in ds.as_numpy_iterator()], flush=True)
    print("END", flush=True)
    """
)


@pytest.mark.timeout(300)
def test_ray_without_a_prior_ray_init_runs_to_the_end(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).resolve().parent)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("[0, 1, 2, 3, 4, 5]") == 2 and "END" in result.stdout

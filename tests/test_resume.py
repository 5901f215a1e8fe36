"""Exact resume: an iterator over a dataset tfbridge built from an indexed source, saved with
tf.train.Checkpoint in one process and restored in another, delivers exactly the rest of its pass and then the
same later epochs as the uninterrupted run (same order, same values, nothing lost or repeated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _resume_sources import Records, Scalars

import tfbridge as tb

HERE = Path(__file__).resolve().parent
_RUN_TIMEOUT_S = 150


def _run(case: str, phase: str, path: Path, at: int = 0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(HERE / "_resume_run.py"), case, phase, str(path), str(at)],
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ids(batches: list[Any]) -> list[int]:
    """The example ids in ``batches``, in order (each case's examples carry their index)."""
    out: list[int] = []
    for b in batches:
        if isinstance(b, dict):
            b = b["y"]
        elif isinstance(b, list) and b and isinstance(b[0], dict):  # (features, label)
            b = b[1]
        elif isinstance(b, list) and len(b) == 3 and not (isinstance(b[0], list) and isinstance(b[0][0], list)):
            b = b[0]  # (ids, draws, draws), batched or not
        arr = np.asarray(b)
        out.extend(int(v) for v in (arr[:, 0] if arr.ndim == 2 else arr.reshape(-1)))
    return out


CASES: dict[str, tuple[int, list[int] | None]] = {  # case -> (batches read before saving, the ids a pass holds)
    "serial-shuffled-batches": (5, list(range(203))),
    "thread-shuffled-batches": (11, list(range(203))),
    "process-shuffled-augmented": (7, list(range(90))),
    "process-unbatched": (13, list(range(40))),
    "shuffled-without-seed": (9, list(range(120))),
    "label": (4, list(range(97))),
    "input-context": (6, None),  # every other element of each epoch's permutation: 75 of them
    "chunked-scalars": (100, list(range(5000))),  # saved in the middle of a chunk of 64
    "pad-batch": (3, list(range(150))),
    "pad-batch-buckets": (3, list(range(150))),
}


@pytest.mark.timeout(2 * _RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("case", list(CASES))
def test_an_iterator_saved_mid_epoch_and_restored_in_a_new_process_gives_exactly_the_uninterrupted_rest(
    case: str, tmp_path: Path
) -> None:
    at, every = CASES[case]
    saved = _run(case, "save", tmp_path / "ckpt", at)  # reads on after saving: the uninterrupted run
    restored = _run(case, "restore", tmp_path / "ckpt")
    assert len(saved["before"]) == at
    assert restored["rest"] == saved["rest"], "the rest of the pass: same batches, same values, same order"
    assert restored["later"] == saved["later"], "the later epochs: the uninterrupted run's"
    first = _ids(saved["before"]) + _ids(restored["rest"])
    for ids in (first, *(_ids(epoch) for epoch in restored["later"])):
        if every is None:
            assert len(ids) == len(set(ids)) == 75 and set(ids) <= set(range(150))
        else:
            assert sorted(ids) == every, "every element once in each pass, the interrupted one too"
    if "shuffled" in case or case in ("label", "input-context", "chunked-scalars", "pad-batch", "pad-batch-buckets"):
        assert _ids(restored["later"][0]) != _ids(restored["later"][1]), "each epoch its own order"


def _checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.iterdir() if f.name.startswith(path.name))


@pytest.mark.timeout(120)
def test_a_checkpoint_does_not_grow_with_the_dataset(tmp_path: Path) -> None:
    sizes = []
    for n in (1_000, 1_000_000):
        ds = tb.to_dataset(Scalars(n), executor="serial", shuffle=True, seed=1, batch_size=32, peek=2)
        it = iter(ds)
        for _ in range(10):
            next(it)
        path = tmp_path / f"n{n}"
        tf.train.Checkpoint(iterator=it).write(str(path))
        sizes.append(_checkpoint_bytes(path))
    assert sizes[1] < sizes[0] * 1.2 + 1024, f"checkpoint bytes for 1e3 and 1e6 elements: {sizes}"


@pytest.mark.timeout(120)
def test_restoring_in_the_same_process_twice_gives_the_same_rest_both_times(tmp_path: Path) -> None:
    ds = tb.to_dataset(Records(50), executor="thread", shuffle=True, seed=4, batch_size=4)
    it = iter(ds)
    for _ in range(3):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "c"))
    rest = [b["y"].numpy().tolist() for b in it]
    for _ in range(2):
        again = iter(ds)
        tf.train.Checkpoint(iterator=again).read(path).assert_consumed()
        assert [b["y"].numpy().tolist() for b in again] == rest

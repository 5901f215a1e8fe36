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


def _ids(read: list[Any]) -> list[int]:
    """The example ids of what was read, in order."""
    return [i for _, ids in read for i in ids]


CASES: dict[str, tuple[int, list[int] | None]] = {  # case -> (batches read before saving, the ids a pass holds)
    "serial-shuffled-batches": (5, list(range(203))),
    "thread-shuffled-batches": (11, list(range(203))),
    "process-shuffled-augmented": (7, list(range(90))),
    "process-unbatched": (13, list(range(40))),
    "ray-shuffled-augmented": (6, list(range(60))),
    "shuffled-without-seed": (9, list(range(120))),
    "label": (4, list(range(97))),
    "input-context": (6, None),  # every other element of each epoch's permutation: 75 of them
    "chunked-scalars": (100, list(range(5000))),  # saved in the middle of a chunk of 64
    "pad-batch": (3, list(range(150))),
    "pad-batch-buckets": (3, list(range(150))),
    "stream": (4, list(range(50))),  # restored by reading the generator again and dropping 16 examples
    "ragged": (17, list(range(60))),
    "hf-blocks-buckets": (5, list(range(300))),
    "hf-in-memory": (5, list(range(300))),  # TensorFlow's own route: see the test
}


@pytest.mark.timeout(2 * _RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("case", list(CASES))
def test_an_iterator_saved_mid_epoch_and_restored_in_a_new_process_gives_exactly_the_uninterrupted_rest(
    case: str, tmp_path: Path
) -> None:
    at, every = CASES[case]
    if case.startswith("ray"):
        pytest.importorskip("ray")
    saved = _run(case, "save", tmp_path / "ckpt", at)  # reads on after saving: the uninterrupted run
    restored = _run(case, "restore", tmp_path / "ckpt")
    assert len(saved["before"]) == at
    assert restored["rest"] == saved["rest"], "the rest of the pass: same batches, same values, same order"
    if case != "hf-in-memory":  # tf.data's shuffle draws each pass's seed from a generator the checkpoint of
        # one iterator does not hold: in a new process the later epochs start over from the dataset's first order
        assert restored["later"] == saved["later"], "the later epochs: the uninterrupted run's"
    first = _ids(saved["before"]) + _ids(restored["rest"])
    for ids in (first, *(_ids(epoch) for epoch in restored["later"])):
        if every is None:
            assert len(ids) == len(set(ids)) == 75 and set(ids) <= set(range(150))
        else:
            assert sorted(ids) == every, "every element once in each pass, the interrupted one too"
    if case not in ("process-unbatched", "stream"):
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


@pytest.mark.timeout(120)
def test_restoring_a_pass_over_a_one_shot_iterator_mid_way_is_refused_with_the_reason(tmp_path: Path) -> None:
    def one_shot() -> Any:
        return tb.to_dataset(iter([np.int64(i) for i in range(5000)]), batched=False)

    it = iter(one_shot())
    for _ in range(5):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "c"))
    again = iter(one_shot())  # as a new process would: the same code, a new iterator object
    tf.train.Checkpoint(iterator=again).read(path).assert_consumed()
    with pytest.raises(tf.errors.OpError, match=r"cannot restore a pass over .* at element \d+: it is a one-shot"):
        list(again)  # what the saved iterator held (its read-ahead) comes first; then the stream is asked


@pytest.mark.timeout(120)
def test_restoring_a_stream_that_now_ends_sooner_says_so(tmp_path: Path) -> None:
    size = [5000]

    def shrinking() -> Any:
        yield from (np.int64(i) for i in range(size[0]))

    it = iter(tb.to_dataset(shrinking, batched=False))
    for _ in range(10):
        next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "c"))
    size[0] = 4
    again = iter(tb.to_dataset(shrinking, batched=False, spec=tb.infer_spec(shrinking, batched=False)))
    tf.train.Checkpoint(iterator=again).read(path).assert_consumed()
    with pytest.raises(tf.errors.OpError, match=r"reading it again ended after 4 elements\.\nHint: a stream"):
        list(again)

"""materialize: one run of the source into tf.data's save format; resumable; refuses to clobber other data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from _sources import Records

import tfbridge as tb
from tfbridge.materialize import load as tb_load

pytestmark = pytest.mark.timeout(240)


def _ids(ds: Any) -> list[int]:
    return [int(y[0]) for _, y in ds]


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_materialize_writes_every_element_once_in_order_and_loads_graph_native(tmp_path: Path, executor: str) -> None:
    source = Records()
    ds = tb.materialize(source, tmp_path / "data", executor=executor, workers=2, shards=4)
    assert ds.element_spec == tb.to_dataset(source).element_spec  # float64 -> float32, variable tokens dim
    for epoch in range(2):
        assert _ids(ds) == list(range(30)), epoch
    first = next(iter(ds))
    np.testing.assert_array_equal(first[0]["x"].numpy(), np.zeros((4, 3), np.float32))
    # another program reads it with TensorFlow alone (its default reader interleaves the shards)
    again = tf.data.Dataset.load(str(tmp_path / "data"))
    assert sorted(_ids(again)) == list(range(30))
    assert _ids(tb_load(tmp_path / "data")) == list(range(30))  # in order, shard after shard
    manifest = json.loads((tmp_path / "data" / "tfbridge-materialize.json").read_text())
    assert manifest["complete"] is True and manifest["elements_written"] == 30
    assert not (tmp_path / "data" / ".parts").exists()


def test_materialize_again_on_a_complete_path_does_not_run_the_source(tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    tb.materialize(Records(log=log), tmp_path / "data", executor="serial")
    log.write_text("")
    ds = tb.materialize(Records(log=log), tmp_path / "data", executor="serial")
    peeked = {int(i) for i in log.read_text().split()}
    assert len(peeked) <= 8  # only the peek that checks it is the same source
    assert _ids(ds) == list(range(30))


def test_interrupted_materialize_resumes_without_redoing_finished_parts(tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    with pytest.raises(tb.SourceError, match="element 22: OSError: disk hiccup at 22") as info:
        tb.materialize(Records(log=log, fail_at=22), tmp_path / "data", executor="serial", shards=6)
    assert info.value.index == 22
    parts = sorted(p.name for p in (tmp_path / "data" / ".parts").iterdir() if p.is_dir())
    assert parts == ["part-00000", "part-00001", "part-00002", "part-00003"]  # 0-19 done; 20-24 was not
    (tmp_path / "data" / ".parts" / "part-00004.tmp-1").mkdir()  # a half-written part from a killed run
    log.write_text("")
    ds = tb.materialize(Records(log=log), tmp_path / "data", executor="serial", shards=6)
    asked = [int(i) for i in log.read_text().split()]
    assert asked[8:] == list(range(20, 30))  # after the 8-element peek, only the unfinished parts ran again
    assert _ids(ds) == list(range(30))


class _Forty:
    """The job's source (below) without the stall."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        return np.full((2, 2), i, np.int64)


_JOB = """
import sys, threading, numpy as np
import tfbridge as tb

class Stalls:
    calls = 0
    def __len__(self):
        return 40
    def __getitem__(self, i):
        self.calls += 1  # the first 8 calls are the peek, at spread positions
        if i >= 20 and self.calls > 8:
            threading.Event().wait()  # the run is killed while here
        return np.full((2, 2), i, np.int64)

tb.materialize(Stalls(), sys.argv[1], executor="serial", shards=8, verbose=False)
"""


def test_materialize_killed_mid_run_then_resumed_gives_everything_once(tmp_path: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", _JOB, str(data)], env=env, stdout=subprocess.DEVNULL)
    parts = data / ".parts"
    deadline = time.monotonic() + 120
    try:
        # parts 0-3 (elements 0-19) finish, then the source stalls at 20: wait for the fourth part's rename
        while not (parts / "part-00003").is_dir():
            assert proc.poll() is None, "the job ended before it was killed"
            assert time.monotonic() < deadline, "the job wrote no fourth part within 120 s"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)  # a bounded wait between looks at the directory
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the same source in this process resumes the killed run: only the unfinished parts run
    ds = tb.materialize(_Forty(), data, executor="serial", shards=8, verbose=False)
    assert [int(t[0, 0]) for t in ds] == list(range(40))
    assert [int(t[0, 0]) for t in tb_load(data)] == list(range(40))


def test_materialize_a_generator_and_a_tf_data_pipeline(tmp_path: Path) -> None:
    def gen() -> Any:
        for i in range(7):
            yield np.arange(i + 1, dtype=np.int32)

    ds = tb.materialize(gen, tmp_path / "gen", batched=False)
    assert [x.numpy().tolist() for x in ds] == [list(range(i + 1)) for i in range(7)]
    native = tf.data.Dataset.range(10).map(lambda i: i * 2)
    assert [int(x) for x in tb.materialize(native, tmp_path / "native")] == [i * 2 for i in range(10)]


def test_materialize_with_gzip_compression(tmp_path: Path) -> None:
    ds = tb.materialize(Records(), tmp_path / "gz", compression="GZIP", executor="serial")
    assert _ids(ds) == list(range(30))
    assert sorted(_ids(tf.data.Dataset.load(str(tmp_path / "gz"), compression="GZIP"))) == list(range(30))


def test_materialize_refuses_a_path_holding_another_source(tmp_path: Path) -> None:
    tb.materialize(Records(10), tmp_path / "data", executor="serial")
    with pytest.raises(tb.TfBridgeError, match="holds a materialization of a different source") as info:
        tb.materialize(Records(12), tmp_path / "data", executor="serial")
    assert "(elements, shards differ)" in str(info.value) and "Hint: pass another path" in str(info.value)


def test_materialize_refuses_a_directory_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(tb.TfBridgeError, match="already exists and is not a tfbridge materialization"):
        tb.materialize(Records(), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_materialize_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(tb.TfBridgeError, match=r"compression must be None, 'GZIP' or 'SNAPPY'\. Received: 'zip'"):
        tb.materialize(Records(), tmp_path / "a", compression="zip")
    with pytest.raises(tb.TfBridgeError, match=r"shards must be a positive int or None\. Received: 0"):
        tb.materialize(Records(), tmp_path / "b", shards=0)


def test_load_refuses_a_path_that_is_not_a_complete_materialization(tmp_path: Path) -> None:
    with pytest.raises(tb.TfBridgeError, match="is not a complete tfbridge materialization") as info:
        tb_load(tmp_path)
    assert "Hint: run tb.materialize(source, path) first." in str(info.value)


def test_materialize_refuses_an_infinite_dataset_and_an_empty_source(tmp_path: Path) -> None:
    with pytest.raises(tb.TfBridgeError, match="is infinite \\(it repeats\\): materialize would never finish") as info:
        tb.materialize(tf.data.Dataset.range(3).repeat(), tmp_path / "inf")
    assert "Hint: materialize one pass" in str(info.value)
    with pytest.raises(tb.TfBridgeError, match="timeout must be a positive number of seconds or None"):
        tb.materialize(Records(), tmp_path / "t", timeout=-1)


def test_an_assembly_interrupted_halfway_is_finished_by_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules["tfbridge.materialize"]  # the package's `materialize` name is the function
    real = module._write_manifest
    marks = []

    def stop_before_marking_complete(root: Path, content: dict[str, Any]) -> None:
        marks.append(content.get("complete"))
        if content.get("complete"):
            raise KeyboardInterrupt  # as if the run were stopped right after the shards moved
        real(root, content)

    monkeypatch.setattr(module, "_write_manifest", stop_before_marking_complete)
    with pytest.raises(KeyboardInterrupt):
        tb.materialize(Records(), tmp_path / "data", executor="serial", shards=3)
    monkeypatch.setattr(module, "_write_manifest", real)
    assert marks == [False, True]
    assert _ids(tb.materialize(Records(), tmp_path / "data", executor="serial", shards=3)) == list(range(30))

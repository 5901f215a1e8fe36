"""materialize: one run of the source into tf.data's save format; resumable; refuses to clobber other data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
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


class Stalls:
    """The job's source (below) without the stall. The same name: the job's ``__main__.Stalls`` is this source
    run as a script, so the resumed run is the same source continuing."""

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
    ds = tb.materialize(Stalls(), data, executor="serial", shards=8, verbose=False)
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
    with pytest.raises(tb.TfBridgeError, match=r"path must be a directory path .*\. Received: 123"):
        tb.materialize(Records(), 123)  # type: ignore[arg-type]
    with pytest.raises(tb.TfBridgeError, match=r"path must be a directory path .*\. Received: None"):
        tb_load(None)  # type: ignore[arg-type]


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


# ---- which source a path holds: reused only for the same source, refused otherwise, replaced on request ---------


class Scaled:
    """10 examples of shape (3,): ``index * factor`` (the factor stands for the source's preprocessing); raises
    OSError at ``fail_at``."""

    def __init__(self, factor: float = 1.0, fail_at: int | None = None) -> None:
        self.factor, self.fail_at = factor, fail_at

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> Any:
        if i == self.fail_at:
            raise OSError(f"disk hiccup at {i}")
        return np.full((3,), i * self.factor, np.float32)


class Shifted(Scaled):
    """Another source with Scaled's length, shapes and dtypes, and other values."""

    def __getitem__(self, i: int) -> Any:
        return np.full((3,), i + 100, np.float32)


class ScaledCopy(Scaled):
    """Another source with Scaled's very values (only its name differs)."""


def _values(ds: Any) -> list[float]:
    return [float(x[0]) for x in ds]


def _identity(root: Path) -> tuple[str, str]:
    manifest = json.loads((root / "tfbridge-materialize.json").read_text())
    return manifest["source"], manifest["fingerprint"]


@pytest.mark.parametrize(
    ("other", "why"),
    [
        pytest.param(
            Shifted(),
            "it was written from test_materialize.Scaled, not test_materialize.Shifted",
            id="other-values",
        ),
        pytest.param(
            ScaledCopy(),
            "it was written from test_materialize.Scaled, not test_materialize.ScaledCopy",
            id="same-values-other-name",
        ),
    ],
)
def test_a_different_source_of_the_same_shapes_and_length_is_refused(tmp_path: Path, other: Any, why: str) -> None:
    tb.materialize(Scaled(), tmp_path / "data", batched=False, executor="serial", verbose=False)

    with pytest.raises(tb.TfBridgeError) as info:
        tb.materialize(other, tmp_path / "data", batched=False, executor="serial", verbose=False)

    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'data'} holds a materialization of another source: {why}; ")
    assert "reusing it would return stale data" in message
    assert "Hint: pass overwrite=True (--overwrite on the command line) to replace it" in message
    assert _values(tb_load(tmp_path / "data")) == [float(i) for i in range(10)]  # left as it was


def test_the_same_class_with_changed_preprocessing_is_refused(tmp_path: Path) -> None:
    tb.materialize(Scaled(1.0), tmp_path / "data", batched=False, executor="serial", verbose=False)

    with pytest.raises(tb.TfBridgeError) as info:
        tb.materialize(Scaled(2.0), tmp_path / "data", batched=False, executor="serial", verbose=False)

    message = str(info.value)
    assert (
        "it was written from test_materialize.Scaled, but the elements this source gives now differ from those "
        "written (its code, preprocessing or data changed, or it is random)"
    ) in message
    assert "overwrite=True" in message and f"load({str(tmp_path / 'data')!r})" in message
    assert _values(tb_load(tmp_path / "data")) == [float(i) for i in range(10)]


def test_an_interrupted_run_is_not_continued_by_a_changed_source(tmp_path: Path) -> None:
    with pytest.raises(tb.SourceError, match="element 7"):
        tb.materialize(Scaled(1.0, fail_at=7), tmp_path / "data", batched=False, executor="serial", shards=5)
    parts = tmp_path / "data" / ".parts"
    assert sorted(p.name for p in parts.iterdir()) == ["part-00000", "part-00001", "part-00002"]

    with pytest.raises(tb.TfBridgeError, match="the elements this source gives now differ"):
        tb.materialize(Scaled(2.0), tmp_path / "data", batched=False, executor="serial", shards=5)

    assert sorted(p.name for p in parts.iterdir()) == ["part-00000", "part-00001", "part-00002"]  # not mixed in
    resumed = tb.materialize(Scaled(1.0), tmp_path / "data", batched=False, executor="serial", shards=5)
    assert _values(resumed) == [float(i) for i in range(10)]


def test_the_same_source_is_reused_not_re_run_and_says_so(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tb.materialize(Scaled(), tmp_path / "data", batched=False, executor="serial", verbose=False)
    written = _identity(tmp_path / "data")
    capfd.readouterr()

    ds = tb.materialize(Scaled(), tmp_path / "data", batched=False, executor="serial", verbose=True)

    err = capfd.readouterr().err
    assert (
        f"tfbridge: reused, not re-run: {tmp_path / 'data'} already holds the 10 elements of test_materialize.Scaled"
    ) in err.splitlines()
    assert _values(ds) == [float(i) for i in range(10)]
    assert _identity(tmp_path / "data") == written


def _numbers() -> Any:
    for i in range(20):
        yield np.float64(i), i


@pytest.mark.parametrize("source", [Records(), _numbers], ids=["indexed", "generator-function"])
def test_the_same_source_object_materialized_twice_is_reused_not_refused(tmp_path: Path, source: Any) -> None:
    """The second call on the same object is not peeked again for its spec (it is remembered); its fingerprint
    must still be the one the first call wrote."""
    first = [int(np.ravel(y)[0]) for _, y in tb.materialize(source, tmp_path / "data", executor="serial")]
    again = tb.materialize(source, tmp_path / "data", executor="serial")
    assert [int(np.ravel(y)[0]) for _, y in again] == first
    assert len(first) in (20, 30)


def test_overwrite_replaces_the_data_with_the_new_sources(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tb.materialize(Scaled(1.0), data, batched=False, executor="serial", shards=5, verbose=False)
    first = _identity(data)

    ds = tb.materialize(Scaled(2.0), data, batched=False, executor="serial", shards=2, overwrite=True)

    assert _values(ds) == [2.0 * i for i in range(10)]
    assert _values(tb_load(data)) == [2.0 * i for i in range(10)]
    assert sorted(_values(tf.data.Dataset.load(str(data)))) == [2.0 * i for i in range(10)]
    assert _identity(data)[0] == first[0] and _identity(data)[1] != first[1]
    assert len([d for d in data.iterdir() if d.is_dir()]) == 1  # one assembled run; the old one is gone
    # the new data is what the path now holds: the changed source is reused, the first one refused
    assert _values(tb.materialize(Scaled(2.0), data, batched=False, shards=2)) == [2.0 * i for i in range(10)]
    with pytest.raises(tb.TfBridgeError, match="the elements this source gives now differ"):
        tb.materialize(Scaled(1.0), data, batched=False, shards=2)


def test_overwrite_replaces_an_interrupted_run_of_another_source_without_its_parts(tmp_path: Path) -> None:
    with pytest.raises(tb.SourceError):
        tb.materialize(Scaled(1.0, fail_at=7), tmp_path / "data", batched=False, executor="serial", shards=5)

    ds = tb.materialize(Shifted(), tmp_path / "data", batched=False, executor="serial", shards=5, overwrite=True)

    assert _values(ds) == [float(i + 100) for i in range(10)]


def test_overwrite_still_leaves_a_directory_that_is_not_a_materialization(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(tb.TfBridgeError, match="already exists and is not a tfbridge materialization"):
        tb.materialize(Scaled(), tmp_path / "mine", batched=False, overwrite=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    with pytest.raises(tb.TfBridgeError, match=r"overwrite must be True or False\. Received: 'yes'"):
        tb.materialize(Scaled(), tmp_path / "new", overwrite="yes")  # type: ignore[arg-type]


def test_a_manifest_without_the_source_identity_is_reused_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tb.materialize(Scaled(), data, batched=False, executor="serial", verbose=False)
    manifest = json.loads((data / "tfbridge-materialize.json").read_text())
    del manifest["source"], manifest["fingerprint"]  # as tfbridge wrote it before it recorded them
    (data / "tfbridge-materialize.json").write_text(json.dumps(manifest))

    with pytest.warns(tb.TfBridgeWarning, match="was written by an earlier tfbridge that did not record") as record:
        ds = tb.materialize(Shifted(), data, batched=False, executor="serial", verbose=False)

    assert "Hint: pass overwrite=True (--overwrite on the command line) once" in str(record[0].message)
    assert _values(ds) == [float(i) for i in range(10)]  # what is there, as before
    assert "fingerprint" not in json.loads((data / "tfbridge-materialize.json").read_text())


def _doubled(i: Any) -> Any:
    return i * 2


def _tripled(i: Any) -> Any:
    return i * 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            lambda: tf.data.Dataset.range(10).map(_doubled),
            lambda: tf.data.Dataset.range(10).map(_tripled),
            id="tf.data-map",
        ),
        pytest.param(lambda: np.arange(12.0), lambda: np.arange(12.0) + 0.5, id="arrays"),
        pytest.param(
            lambda: lambda: (f"word {i}" for i in range(5)),
            lambda: lambda: (f"Word {i}" for i in range(5)),
            id="strings-from-a-generator",
        ),
    ],
)
def test_changed_values_are_refused_for_every_kind_of_source(tmp_path: Path, first: Any, second: Any) -> None:
    tb.materialize(first(), tmp_path / "data", batched=False, verbose=False)
    again = tb.materialize(first(), tmp_path / "data", batched=False, verbose=False)  # the same: reused
    assert [x.numpy() for x in again] == [x.numpy() for x in tb_load(tmp_path / "data")]

    with pytest.raises(tb.TfBridgeError, match="the elements this source gives now differ"):
        tb.materialize(second(), tmp_path / "data", batched=False, verbose=False)


# ---- the count is known: Keras knows the epoch's length ----------------------------------------------------


def test_the_loaded_data_knows_its_cardinality_batched_or_not(tmp_path: Path) -> None:
    batches = tb.materialize(Records(), tmp_path / "batches", executor="serial", shards=4)
    assert int(batches.cardinality()) == 30
    assert int(tb_load(tmp_path / "batches").cardinality()) == 30

    examples = tb.materialize(Scaled(), tmp_path / "examples", batched=False, executor="serial", shards=3)
    assert int(examples.cardinality()) == 10
    assert int(examples.batch(4).cardinality()) == 3
    assert int(examples.batch(4, drop_remainder=True).cardinality()) == 2
    assert len(list(examples.batch(4, drop_remainder=True))) == 2


def test_keras_fit_on_materialized_data_does_not_run_out_of_data(tmp_path: Path) -> None:
    import keras

    def rows() -> Any:
        for i in range(24):
            yield np.full((2,), i, np.float32), np.float32(i % 2)

    ds = tb.materialize(rows, tmp_path / "rows", batched=False, verbose=False).batch(8)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(ds, epochs=2, verbose=0)

    assert len(history.history["loss"]) == 2
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def test_progress_off_a_terminal_is_plain_lines_saying_what_the_time_includes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    tb.materialize(Scaled(), tmp_path / "data", batched=False, executor="serial", shards=2, verbose=True)

    err = capfd.readouterr().err
    assert "\x1b[" not in err and "\r" not in err and "\b" not in err
    last = err.splitlines()[-1]
    assert last.startswith("10/10 elements (100%) in ") and last.endswith("/element (producing and saving)"), last


def test_a_path_that_cannot_be_written_is_refused_before_the_source_runs(tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    (tmp_path / "afile").write_text("")
    with pytest.raises(tb.TfBridgeError) as info:
        tb.materialize(Records(log=log), tmp_path / "afile" / "data")
    assert str(info.value) == (
        f"cannot write to {tmp_path / 'afile' / 'data'}: {tmp_path / 'afile'} is not a directory.\n"
        "Hint: pass a path in a directory you can write to."
    )
    assert not log.exists()  # not even the peek ran
    too_long = tmp_path / ("x" * 300)  # the file system refuses the name itself
    with pytest.raises(tb.TfBridgeError, match=r"^cannot write to .*: File name too long\.\nHint: pass a path"):
        tb.materialize(Records(log=log), too_long)
    assert not log.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys refuses new directories on Linux")
def test_a_directory_the_system_refuses_to_create_is_a_tfbridge_error(tmp_path: Path) -> None:
    # root may write everywhere as far as os.access says, and learns otherwise only when creating it
    with pytest.raises(tb.TfBridgeError) as info:
        tb.materialize(Scaled(), "/sys/tfbridge-test", batched=False, executor="serial")
    assert str(info.value) in (
        "cannot write to /sys/tfbridge-test: Operation not permitted.\n"
        "Hint: pass a path in a directory you can write to.",
        "cannot write to /sys/tfbridge-test: the directory /sys is not writable.\n"
        "Hint: pass a path in a directory you can write to.",
    )


def test_an_unreadable_manifest_is_refused_and_overwrite_replaces_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tfbridge-materialize.json").write_text("{not json")
    with pytest.raises(tb.TfBridgeError, match=r"has an unreadable tfbridge-materialize\.json") as info:
        tb.materialize(Scaled(), tmp_path / "data", batched=False)
    assert "Hint: pass overwrite=True (--overwrite on the command line) to materialize afresh there." in str(info.value)
    ds = tb.materialize(Scaled(), tmp_path / "data", batched=False, overwrite=True)
    assert _values(ds) == [float(i) for i in range(10)]

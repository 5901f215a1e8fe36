"""The command line on small target modules: `tfbridge` and `python -m tfbridge` run as subprocesses where the
process is what is checked (exit status, exactly one stderr line, no traceback, the two entry points agreeing);
commands whose output is what is checked (inspect, code, materialize writing) run through ``tfbridge.cli.main``
in this process, which spares a TensorFlow start-up per command. Identical subprocess runs are made once per
module."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbridge as tb
from tfbridge import cli

_TIMEOUT_S = 120
_CONSOLE_SCRIPT = Path(sys.executable).parent / "tfbridge"

# A batched PyDataset whose last batch is short (2 rows instead of 4), with a float64 field, a generator
# function, in-memory arrays and a zero-argument factory. Imports keras, so TensorFlow starts with it.
_MYSRC = '''
import numpy as np
import keras


class ShortLast(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()

    def __len__(self):
        return 5

    def __getitem__(self, i):
        n = 2 if i == 4 else 4
        features = {"tokens": np.ones((n, 7), np.int32), "score": np.ones((n, 3), np.float64)}
        return features, np.zeros((n,), np.float32)


short_last = ShortLast()


def gen():
    for _ in range(3):
        yield np.ones((4, 2), np.float64), np.zeros((4,), np.int64)


arrays = (np.ones((10, 3), np.float64), np.zeros((10,), np.int64))
arrays_doubled = (arrays[0] * 2, arrays[1])  # the same shapes and length, other values


def make():
    return ShortLast()
'''

# Targets that are not sources, kept free of keras so that TensorFlow never starts and writes to stderr.
_PLAIN = '''
import numpy as np

N = 3


def broken():
    raise RuntimeError("factory exploded")


class NeedsArgs:  # a source once made; as a TARGET, a class whose __init__ needs arguments
    def __init__(self, n, scale=1.0, *, seed, **options):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.zeros(3)


def make(n):
    return NeedsArgs(n, seed=0)


def gen_of(n):
    yield from range(n)
'''

# Sources whose messages carry hints: each element one (4, 3) array (a batch or an example?), scalar fields (not
# batches), dict elements (columns for --label), and a generator function that raises at its third element.
_HINTSRC = '''
import numpy as np


def same():
    for i in range(5):
        yield np.full((4, 3), i, np.float32)


def scalars():
    for i in range(5):
        yield np.float32(i), np.int64(i)


def rows():
    for i in range(5):
        yield {"a": np.zeros(3, np.float32), "b": np.float32(i)}


def fails():
    for i in range(5):
        if i == 2:
            raise ValueError("bad row 2")  # line 23
        yield np.zeros(3, np.float32)
'''

_BADMOD = 'raise RuntimeError("import exploded")\n'


# Wider: 10,000 examples of length 10 but one of length 12 at 9,000, which a spread peek misses.
_DATA = """
import numpy as np

class Wider:
    def __len__(self):
        return 10_000
    def __getitem__(self, i):
        return np.zeros((12 if i == 9000 else 10,), np.float32), i % 3

source = Wider()
"""

# For bench: epochs of 20 elements, far shorter than any timing window; a source that cannot be sent to worker
# processes (so one method fails and the other works); a one-shot iterator.
_BENCHSRC = """
import threading

import numpy as np


class Twenty:
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return np.full((3,), i, np.float32)


twenty = Twenty()


def twenty_gen():
    for i in range(20):
        yield np.full((3,), i, np.float32)


class Locked(Twenty):
    def __init__(self):
        self.lock = threading.Lock()


locked = Locked()
one_shot = iter([np.full((3,), i, np.float32) for i in range(20)])
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The target modules, shared by the module's tests (which never write into it; commands that write are
    given their own directory)."""
    root = tmp_path_factory.mktemp("project")
    (root / "mysrc.py").write_text(textwrap.dedent(_MYSRC))
    (root / "plain.py").write_text(textwrap.dedent(_PLAIN))
    (root / "badmod.py").write_text(_BADMOD)
    (root / "data.py").write_text(_DATA)
    (root / "benchsrc.py").write_text(_BENCHSRC)
    (root / "hintsrc.py").write_text(_HINTSRC)
    return root


_READ_ONLY = ("inspect", "code")
_RUNS: dict[tuple[str, tuple[str, ...], bool], subprocess.CompletedProcess[str]] = {}


def _run(args: list[str], cwd: Path, *, module: bool = False) -> subprocess.CompletedProcess[str]:
    """The command as a subprocess; an inspect or code command already run in ``cwd`` is not run again."""
    key = (str(cwd), tuple(args), module)
    if key in _RUNS:
        return _RUNS[key]
    head = [sys.executable, "-m", "tfbridge"] if module else [str(_CONSOLE_SCRIPT)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        head + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if args[0] in _READ_ONLY:
        _RUNS[key] = result
    return result


@pytest.fixture
def in_process(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    """``run(args) -> (status, stdout, stderr)``: ``tfbridge.cli.main`` in this process, in the project directory;
    the sys.path entries and target modules it loads are dropped afterwards."""
    monkeypatch.chdir(project)
    path, modules = sys.path[:], set(sys.modules)

    def run(args: list[str]) -> tuple[int, str, str]:
        status = cli.main(args)
        out, err = capsys.readouterr()
        return status, out, err

    try:
        yield run
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name in ("mysrc", "plain", "data", "benchsrc") or name.startswith("_tfbridge_target_"):
                del sys.modules[name]


def _load(path: Path) -> Any:
    """Import a target file in this process under a private name (no sys.modules entry left behind)."""
    spec = importlib.util.spec_from_file_location(f"_test_cli_{path.stem}_{id(path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_timing(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus the executor's reason, which quotes the measured time per element."""
    out = dict(report)
    out["executor"] = {k: v for k, v in report["executor"].items() if k != "reason"}
    return out


# ---- inspect -------------------------------------------------------------------------------------------


def test_inspect_file_target_prints_fields_dtypes_float_cast_and_short_last_batch(in_process: Any) -> None:
    status, out, err = in_process(["inspect", "mysrc.py:short_last"])

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("source:") and "ShortLast" in lines[0] and "batched" in lines[0]
    rows = {line.split()[0]: line for line in lines if line.startswith(("x[", "y "))}
    assert "float64 -> float32" in rows["x['score']"] and "(None, 3)" in rows["x['score']"]
    assert "int32" in rows["x['tokens']"] and "->" not in rows["x['tokens']"]
    assert "(None, 7)" in rows["x['tokens']"]
    assert "float32" in rows["y"] and "(None,)" in rows["y"]
    assert (
        "x['score']: float64 in the data, delivered as float32 (cast_floats='floatx'; "
        "pass cast_floats=None to keep it)"
    ) in lines
    sizes = "4 at element 0, 4 at element 1, 4 at element 2, 4 at element 3, 2 at element 4"
    for path in ("x['score']", "x['tokens']", "y"):
        assert f"{path}: batch size varies from 2 to 4 ({sizes}) -> None" in lines
    assert "Traceback" not in out + err


def test_inspect_json_has_stable_keys_and_a_spec_that_round_trips(project: Path) -> None:
    result = _run(["inspect", "mysrc.py:short_last", "--json"], project)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "version", "source", "kind", "batched", "scanned", "executor", "fields", "peek_missed", "spec",
        "delivered_spec", "name"
    }
    assert report["name"] == "mysrc.py:short_last" and report["source"] == "mysrc.ShortLast"
    assert report["kind"] == "indexed" and report["batched"] is True
    assert set(report["executor"]) == {"name", "workers", "reason"}
    fields = {f["path"]: f for f in report["fields"]}
    assert fields["x['score']"]["dtype"] == "float64"
    assert fields["x['score']"]["delivered_dtype"] == "float32"
    assert fields["x['tokens']"]["dtype"] == fields["x['tokens']"]["delivered_dtype"] == "int32"
    assert fields["y"]["varying"] == [{"dim": 0, "min": 2, "max": 4, "sizes": [[0, 4], [1, 4], [2, 4], [3, 4], [4, 2]]}]

    spec = tb.Spec.from_json(json.dumps(report["spec"]))
    delivered = tb.Spec.from_json(json.dumps(report["delivered_spec"]))
    source = _load(project / "mysrc.py").short_last
    assert spec == tb.infer_spec(source)
    assert delivered.signature == tb.to_dataset(source).element_spec


def test_inspect_json_of_in_memory_arrays_is_one_example_per_row(in_process: Any) -> None:
    status, out, err = in_process(["inspect", "mysrc:arrays", "--json"])

    assert status == 0, err
    report = json.loads(out)
    assert report["batched"] is False
    assert [(f["path"], f["dtype"], f["delivered_dtype"], f["shape"]) for f in report["fields"]] == [
        ("x", "float64", "float32", [3]),
        ("y", "int64", "int64", []),
    ]


def test_python_dash_m_inspect_gives_the_same_report_as_the_console_script(project: Path) -> None:
    script = _run(["inspect", "mysrc.py:short_last", "--json"], project)
    module = _run(["inspect", "mysrc.py:short_last", "--json"], project, module=True)

    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert _without_timing(json.loads(module.stdout)) == _without_timing(json.loads(script.stdout))


def test_python_dash_m_bad_target_fails_like_the_console_script(project: Path) -> None:
    script = _run(["inspect", "nosuchmodule:x"], project)
    module = _run(["inspect", "nosuchmodule:x"], project, module=True)

    assert script.returncode == module.returncode == 2
    assert module.stderr == script.stderr
    assert module.stdout == script.stdout == ""


def test_inspect_full_scan_finds_what_the_peek_missed_and_writes_html(
    in_process: Any, tmp_path: Path
) -> None:
    html = tmp_path / "r.html"
    status, out, err = in_process(
        ["inspect", "data.py:source", "--batched", "no", "--full", "--json", "--html", str(html)]
    )

    assert status == 0, err
    data = json.loads(out)
    assert data["peek_missed"][0]["element"] == 9000
    assert html.exists() and f"wrote {html}" in err


def test_inspect_html_into_a_missing_directory_exits_2_before_loading_the_target(
    project: Path, tmp_path: Path
) -> None:
    html = tmp_path / "missing" / "r.html"
    # the factory raises when called: the path error shows the target was not even loaded
    result = _run(["inspect", "plain:broken", "--full", "--html", str(html)], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"tfbridge: error: cannot write the HTML report to {html}: the directory {html.parent} does not exist"
    ]
    assert not html.parent.exists()


# ---- code ----------------------------------------------------------------------------------------------


def test_code_module_target_prints_code_defining_the_datasets_output_signature(
    project: Path, in_process: Any
) -> None:
    status, out, err = in_process(["code", "mysrc:short_last"])

    assert status == 0, err
    assert "# x['score']: float64 in the data, float32 here (cast_floats='floatx')." in out
    namespace: dict[str, Any] = {}
    exec(compile(out, "<tfbridge code>", "exec"), namespace)
    source = _load(project / "mysrc.py").short_last
    assert namespace["output_signature"] == tb.to_dataset(source).element_spec
    inputs = namespace["inputs"]
    assert set(inputs) == {"tokens", "score"}
    assert tuple(inputs["tokens"].shape) == (None, 7) and inputs["tokens"].dtype == "int32"
    assert tuple(inputs["score"].shape) == (None, 3) and inputs["score"].dtype == "float32"
    assert all(isinstance(t, keras.KerasTensor) for t in inputs.values())


def test_code_factory_target_is_called_and_its_source_matches_to_dataset(project: Path, in_process: Any) -> None:
    status, out, err = in_process(["code", "mysrc:make"])

    assert status == 0, err
    namespace: dict[str, Any] = {}
    exec(compile(out, "<tfbridge code>", "exec"), namespace)
    source = _load(project / "mysrc.py").make()
    assert namespace["output_signature"] == tb.to_dataset(source).element_spec
    assert set(namespace["inputs"]) == {"tokens", "score"}


def test_code_generator_function_casts_float64_and_keeps_int64(in_process: Any) -> None:
    status, out, err = in_process(["code", "mysrc:gen"])

    assert status == 0, err
    namespace: dict[str, Any] = {}
    exec(compile(out, "<tfbridge code>", "exec"), namespace)
    assert namespace["output_signature"] == (
        tf.TensorSpec(shape=(None, 2), dtype=tf.float32),
        tf.TensorSpec(shape=(None,), dtype=tf.int64),
    )
    assert tuple(namespace["inputs"].shape) == (None, 2)
    assert np.dtype(namespace["inputs"].dtype) == np.float32


# ---- bad targets ---------------------------------------------------------------------------------------

_BAD_TARGETS = [
    pytest.param("nosuchmodule:x", "cannot import module 'nosuchmodule'", id="missing-module"),
    pytest.param("plain:nope", "plain has no attribute 'nope'", id="missing-attribute"),
    pytest.param("plain.py:nope", "plain.py has no attribute 'nope'", id="missing-attribute-in-file"),
    pytest.param("nosuchfile.py:x", "no such file: nosuchfile.py", id="missing-file"),
    pytest.param("plain", "TARGET must be MODULE:OBJECT or FILE.py:OBJECT. Received: 'plain'", id="no-colon"),
    pytest.param("plain:N", "plain:N is not a data source: int is not a data source. Received: 3", id="int"),
    pytest.param(
        "badmod:x", "module 'badmod' raised RuntimeError while importing: import exploded", id="module-raises"
    ),
    pytest.param("badmod.py:x", "badmod.py raised RuntimeError while loading: import exploded", id="file-raises"),
    pytest.param(
        "plain:broken",
        "calling broken() to get the source raised RuntimeError: factory exploded",
        id="factory-raises",
    ),
    pytest.param(
        "plain:np",
        "plain:np is not a data source: module is not a data source.",
        id="module-object",
    ),
    pytest.param(
        "plain:NeedsArgs",
        "plain:NeedsArgs is a class that needs arguments (n, seed), and tfbridge can call a TARGET only without "
        "arguments; point TARGET at the source itself or at a function without arguments that returns it (e.g. add "
        "`source = NeedsArgs(...)` to plain and use plain:source)",
        id="class-needing-arguments",
    ),
    pytest.param(
        "plain.py:make",
        "plain.py:make is a function that needs arguments (n), and tfbridge can call a TARGET only without "
        "arguments; point TARGET at the source itself or at a function without arguments that returns it (e.g. add "
        "`source = make(...)` to plain.py and use plain.py:source)",
        id="function-needing-arguments",
    ),
    pytest.param(
        "plain:gen_of",
        "plain:gen_of is a generator function that needs arguments (n), and tfbridge can call a TARGET only without "
        "arguments; point TARGET at a generator function without arguments (e.g. add "
        "`def source(): yield from gen_of(...)` to plain and use plain:source)",
        id="generator-function-needing-arguments",
    ),
]


@pytest.mark.parametrize(("target", "message"), _BAD_TARGETS)
def test_bad_target_exits_2_with_one_error_line_and_no_traceback(project: Path, target: str, message: str) -> None:
    result = _run(["inspect", target], project)

    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tfbridge: error: ")
    assert message in lines[0]


# ---- hints name the command line's flags ---------------------------------------------------------------------


def test_a_guessed_batched_is_a_warning_whose_hint_names_the_batched_flag(project: Path) -> None:
    result = _run(["inspect", "hintsrc:same"], project)

    assert result.returncode == 0, result.stderr
    assert (  # TensorFlow may log lines of its own around it
        "tfbridge: TfBridgeWarning: same: every peeked element has a leading axis of 4, so an element could be a "
        "batch or a single example; it is taken as a batch (the Keras convention for generators and __getitem__ "
        "sources).\nHint: pass --batched no if each element is one example, or --batched yes if it is a batch "
        "(either also silences this).\n"
    ) in result.stderr
    assert "batched=" not in result.stderr


def test_a_wrong_batched_is_an_error_whose_hint_names_the_batched_flag(project: Path) -> None:
    result = _run(["inspect", "hintsrc:scalars", "--batched", "yes"], project)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "tfbridge: SpecInferenceError: element 0 at x: a batched source needs a batch axis on every field, but this "
        "field is a scalar. Received: float32(shape=(), dtype=float32)",
        "Hint: pass --batched no if each element is a single example.",
    ]


def test_a_missing_label_column_is_an_error_whose_hint_names_the_label_flag(project: Path) -> None:
    result = _run(["code", "hintsrc:rows", "--label", "z"], project)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "tfbridge: TfBridgeError: label column(s) ['z'] not found. The element has the columns ['a', 'b'].",
        "Hint: pass --label the name(s) of existing columns. Received: --label z",
    ]


def test_a_source_error_prints_the_sources_traceback_above_as_its_hint_says(project: Path) -> None:
    result = _run(["inspect", "hintsrc:fails"], project)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    frame = f'  File "{project / "hintsrc.py"}", line 23, in fails\n    raise ValueError("bad row 2")  # line 23\n'
    assert frame in result.stderr
    assert result.stderr.endswith(
        "ValueError: bad row 2\n"
        "tfbridge: SourceError: element 2: ValueError: bad row 2\n"
        "Hint: the source's own code raised this (traceback above).\n"
    )


@pytest.mark.parametrize(
    ("message", "printed"),
    [
        pytest.param(
            "the source is taken as batched=False.\nHint: pass batched=True to read the source that way.",
            "the source is taken as batched=False.\nHint: pass --batched yes to read the source that way.",
            id="only-the-hint-line",
        ),
        pytest.param(
            "x\nHint: use executor=\"thread\", or keep unpicklable members out of the source.",
            "x\nHint: use --executor thread, or keep unpicklable members out of the source.",
            id="executor",
        ),
        pytest.param(
            "x\nHint: try workers=4, timeout=2.5 or peek=32; or pass spec= or finite=True.",
            "x\nHint: try --workers 4, --timeout 2.5 or --peek 32; or pass spec= or finite=True.",
            id="numbers-and-python-only-keywords",
        ),
        pytest.param(
            "x\nHint: check ray_address= (e.g. 'auto'). Received: label=['a', 'my col']",
            "x\nHint: check --ray-address (e.g. 'auto'). Received: --label a --label 'my col'",
            id="bare-keyword-and-label-list",
        ),
        pytest.param(
            "x\nHint: pass overwrite=True (--overwrite on the command line) to replace it, or use load('out').",
            "x\nHint: pass --overwrite to replace it, or use load('out').",
            id="overwrite-already-named",
        ),
        pytest.param(
            "x\nHint: use `tb.to_dataset(source, executor=\"ray\")`, or pad_batch(..., ragged=True, peek=2).",
            "x\nHint: use `tb.to_dataset(source, executor=\"ray\")`, or pad_batch(..., ragged=True, peek=2).",
            id="code-stays-code",
        ),
        pytest.param(
            "x\nHint: its traceback:\nTraceback (most recent call last):\n    load(label='y', batched=False)",
            "x\nHint: its traceback:\nTraceback (most recent call last):\n    load(label='y', batched=False)",
            id="traceback-lines-stay",
        ),
    ],
)
def test_hint_keywords_are_written_as_the_command_lines_flags(message: str, printed: str) -> None:
    assert cli.for_the_command_line(message) == printed


def test_code_with_bad_target_exits_2_with_one_error_line(project: Path) -> None:
    result = _run(["code", "plain:N"], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "tfbridge: error: plain:N is not a data source: int is not a data source. Received: 3"
    ]


# ---- bench (short windows, one repetition: each test takes about a second) ----------------------------------

_QUICK = ["--seconds", "0.2", "--repeats", "1"]
_ROW = re.compile(r"^(.+?) +(\d+\.\d) elements/s  \[(\d+\.\d) \.\. (\d+\.\d)\]  over (.+)$")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(["benchsrc:twenty", "--batched", "no"], id="indexed-20-examples"),
        pytest.param(["mysrc:short_last"], id="pydataset-5-batches"),
        pytest.param(["benchsrc:twenty_gen", "--batched", "no"], id="generator-function-20-examples"),
    ],
)
def test_bench_times_whole_passes_of_a_source_shorter_than_the_window(in_process: Any, target: list[str]) -> None:
    status, out, err = in_process(["bench", *target, "--executor", "serial", *_QUICK])

    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    rows = [_ROW.match(line) for line in lines[:2]]
    assert all(rows), out
    assert [row[1] for row in rows if row] == ["tfbridge executor=serial", "plain from_generator"]
    for row in rows:
        assert row is not None
        median, low, high = float(row[2]), float(row[3]), float(row[4])
        assert 0 < low <= median <= high, row[0]
        assert re.fullmatch(r"\d+ whole pass(es)?", row[5]), row[0]
    assert re.fullmatch(r"tfbridge / plain from_generator: \d+\.\d\dx", lines[2])
    assert "nan" not in out


def test_bench_method_that_fails_exits_1_naming_it_after_the_rows_that_worked(project: Path) -> None:
    result = _run(["bench", "benchsrc.py:locked", "--batched", "no", "--executor", "process", *_QUICK], project)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    row = _ROW.match(lines[0])
    assert row is not None and row[1] == "plain from_generator" and float(row[2]) > 0, lines[0]
    assert result.stderr.splitlines()[-1] == (
        "tfbridge: bench: tfbridge executor=process failed: TfBridgeError: the source cannot be sent to worker "
        "processes: TypeError: cannot pickle '_thread.lock' object"
    )


def test_bench_one_shot_iterator_exits_2_saying_it_can_be_read_once(in_process: Any) -> None:
    status, out, err = in_process(["bench", "benchsrc:one_shot", "--batched", "no", *_QUICK])

    assert status == 2
    assert out == ""
    assert err.splitlines() == [
        "tfbridge: error: benchsrc:one_shot is an iterator, which can be read only once, and bench reads the source "
        "anew for each method and repetition; make TARGET a generator function or a re-iterable (such as a list)"
    ]


def test_bench_of_in_memory_arrays_exits_2_saying_there_is_no_python_to_compare(in_process: Any) -> None:
    status, out, err = in_process(["bench", "mysrc:arrays", *_QUICK])

    assert status == 2
    assert out == ""
    assert err.splitlines() == [
        "tfbridge: error: mysrc:arrays runs without Python (in-memory arrays are gathered by tf.data itself); bench "
        "compares ways of running a Python source (__getitem__, a generator function or an iterable)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--repeats", "0"], "argument --repeats: must be a positive int. Received: '0'", id="no-repeats"),
        pytest.param(["--seconds", "0"], "argument --seconds: must be a positive number. Received: '0'",
                     id="no-seconds"),
        pytest.param(["--seconds", "x"], "argument --seconds: must be a positive number. Received: 'x'",
                     id="seconds-not-a-number"),
        pytest.param(["--peek", "0"], "argument --peek: must be a positive int. Received: '0'", id="no-peek"),
    ],
)
def test_bench_bad_arguments_exit_2_with_usage(project: Path, args: list[str], message: str) -> None:
    result = _run(["bench", "benchsrc:twenty", *args], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: tfbridge bench")
    assert message in result.stderr


# ---- materialize (argument and target errors; the writing itself is tested in test_materialize.py) --------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param("nosuchmodule:x", "cannot import module 'nosuchmodule'", id="missing-module"),
        pytest.param("plain.py:nope", "plain.py has no attribute 'nope'", id="missing-attribute-in-file"),
        pytest.param("plain:N", "plain:N is not a data source: int is not a data source. Received: 3", id="int"),
    ],
)
def test_materialize_bad_target_exits_2_with_one_error_line_and_writes_nothing(
    project: Path, target: str, message: str
) -> None:
    result = _run(["materialize", target, "out"], project)

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tfbridge: error: ") and message in lines[0]
    assert not (project / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["mysrc:arrays"], "the following arguments are required: PATH", id="no-path"),
        pytest.param(
            ["mysrc:arrays", "out", "--workers", "0"],
            "argument --workers: must be a positive int. Received: '0'",
            id="zero-workers",
        ),
        pytest.param(
            ["mysrc:arrays", "out", "--shards", "x"], "argument --shards: must be a positive int. Received: 'x'",
            id="shards-not-a-number",
        ),
        pytest.param(["mysrc:arrays", "out", "--executor", "gpu"], "argument --executor: invalid choice: 'gpu'",
                     id="unknown-executor"),
    ],
)
def test_materialize_bad_arguments_exit_2_with_usage(project: Path, args: list[str], message: str) -> None:
    result = _run(["materialize", *args], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: tfbridge materialize")
    assert message in result.stderr
    assert not (project / "out").exists()


def test_materialize_writes_the_source_and_says_how_many_elements_and_where(
    project: Path, in_process: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = in_process(
        ["materialize", f"{project / 'mysrc.py'}:arrays", "out", "--executor", "serial", "--shards", "2"]
    )

    assert status == 0, err
    # The progress bar comes first; the summary is the last line.
    assert out.splitlines()[-1] == (
        "tfbridge: wrote 10 elements to out; load them in order with load('out') after `from tfbridge.materialize "
        "import load`, "
        "or with tf.data.Dataset.load('out') (shards interleaved)"
    )
    got = list(tf.data.Dataset.load(str(tmp_path / "out")).as_numpy_iterator())
    arrays = _load(project / "mysrc.py").arrays
    assert [int(y) for _, y in got] == arrays[1].tolist()
    np.testing.assert_array_equal(np.stack([x for x, _ in got]), arrays[0].astype(np.float32))


def test_materialize_into_an_unwritable_path_exits_2_before_loading_the_target(
    project: Path, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("not a directory")
    out = tmp_path / "afile" / "out"
    result = _run(["materialize", "plain:broken", str(out)], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"tfbridge: error: cannot write the materialized data to {out}: {tmp_path / 'afile'} is not a directory"
    ]


def test_materialize_progress_in_a_log_is_plain_and_a_second_run_says_reused_not_re_run(
    project: Path, tmp_path: Path
) -> None:
    """stderr is a pipe here, as in a log: progress is plain lines. Then the same source again (reused), a
    different one of the same shapes (refused, naming --overwrite) and that one with --overwrite (written)."""
    target = f"{project / 'mysrc.py'}:arrays"
    first = _run(["materialize", target, "out", "--executor", "serial", "--shards", "2"], tmp_path)

    assert first.returncode == 0, first.stderr
    for text in (first.stdout, first.stderr):
        assert "\x1b[" not in text and "\r" not in text and "Traceback" not in text
    progress = [line for line in first.stderr.splitlines() if line.startswith("10/10 elements (100%) in ")]
    assert len(progress) == 1 and progress[0].endswith("/element (producing and saving)"), first.stderr
    assert first.stdout.startswith("tfbridge: wrote 10 elements to out; ")

    again = _run(["materialize", target, "out", "--executor", "serial", "--shards", "2"], tmp_path)

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        "tfbridge: reused, not re-run: out already holds the 10 elements of this source; load them in order with "
        "load('out')"
    )
    assert "wrote" not in again.stdout and "\x1b[" not in again.stderr

    other = [f"{project / 'mysrc.py'}:arrays_doubled", "out", "--executor", "serial", "--shards", "2"]
    refused = _run(["materialize", *other], tmp_path)

    assert refused.returncode == 1
    assert refused.stdout == "" and "Traceback" not in refused.stderr
    assert "\ntfbridge: TfBridgeError: out holds a materialization of another source: " in "\n" + refused.stderr
    assert "Hint: pass --overwrite to replace it with this source's data, or another path; " in refused.stderr

    replaced = _run(["materialize", *other, "--overwrite"], tmp_path)

    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.startswith("tfbridge: wrote 10 elements to out; ")
    got = [x for x, _ in tf.data.Dataset.load(str(tmp_path / "out")).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(got), np.full((10, 3), 2.0, np.float32))


# ---- service (argument errors; the servers themselves are tested in test_service.py) ----------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["worker"], "the following arguments are required: --dispatcher", id="worker-no-dispatcher"),
        pytest.param(
            ["worker", "--dispatcher", "localhost"],
            "argument --dispatcher: the address must be 'grpc://host:port' or 'host:port', "
            "e.g. 'grpc://localhost:5050'. Received: 'localhost'",
            id="dispatcher-without-port",
        ),
        pytest.param(
            ["worker", "--dispatcher", "http://localhost:5050"], "speak grpc://, not http://", id="other-scheme"
        ),
        pytest.param(
            ["dispatcher", "--port", "70000"],
            "argument --port: must be a port number from 0 to 65535. Received: '70000'",
            id="port-too-big",
        ),
        pytest.param([], "the following arguments are required: role", id="no-role"),
    ],
)
def test_service_bad_arguments_exit_2_with_usage(project: Path, args: list[str], message: str) -> None:
    result = _run(["service", *args], project)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: tfbridge service")
    assert message in result.stderr


def test_service_dispatcher_on_a_taken_port_exits_1_naming_the_port(project: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _run(["service", "dispatcher", "--port", str(port)], project)

    assert result.returncode == 1
    assert result.stdout == ""
    assert f"tfbridge: TfBridgeError: port {port} is already in use on this machine." in result.stderr
    assert "Hint: pick another port, or port 0 for any free one." in result.stderr


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path: Path) -> None:
    """``tfbridge inspect ... --json | head -c 100``: the reader goes away with most of the output unwritten
    (more than a pipe holds); the command ends with status 0 and no traceback."""
    (tmp_path / "wide.py").write_text(
        "import numpy as np\ndata = {f'feature_{i}': np.zeros((10, 3)) for i in range(200)}\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [str(_CONSOLE_SCRIPT), "inspect", "wide.py:data", "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.read(100).startswith(b"{")
    proc.stdout.close()  # as head does, before the command has written it all
    _, err = proc.communicate(timeout=_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()

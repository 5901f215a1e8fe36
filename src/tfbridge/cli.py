"""Command line: ``tfbridge inspect|code|bench|demo|materialize|service``. Thin: parses arguments and calls the
library."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect as _inspect
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfbridge.errors import SourceError, TfBridgeError, TfBridgeWarning

EXIT_USAGE = 2
_SERVICE_STOP_TIMEOUT_S = 10.0


class TargetError(Exception):
    """A TARGET that cannot be loaded: one line, exit status 2."""


class PathError(TargetError):
    """An output path that cannot be written, found before any work: one line, exit status 2."""


def check_output(path: str, *, directory: bool, what: str) -> None:
    """Raise PathError when ``path`` (a file, or a directory to create or fill) cannot be written."""
    from tfbridge._paths import write_problem

    problem = write_problem(path, directory=directory)
    if problem is not None:
        msg = f"cannot write {what} to {path}: {problem}"
        raise PathError(msg)


def load_target(target: str) -> Any:
    """``module:object`` or ``file.py:object``; a zero-argument callable (not a generator function) is
    called to get the source."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        msg = f"TARGET must be MODULE:OBJECT or FILE.py:OBJECT. Received: {target!r}"
        raise TargetError(msg)
    if module_part.endswith(".py") or os.sep in module_part:
        module = _load_file(module_part)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            msg = f"cannot import module {module_part!r}: {exc}"
            raise TargetError(msg) from exc
        except (Exception, SystemExit) as exc:
            msg = f"module {module_part!r} raised {type(exc).__name__} while importing: {exc}"
            raise TargetError(msg) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            msg = f"{module_part} has no attribute {attr!r}"
            raise TargetError(msg)
        obj = getattr(obj, part)
    needed = _arguments_needed(obj)
    if needed:
        raise TargetError(_needs_arguments(target, obj, needed))
    if callable(obj) and not _inspect.isgeneratorfunction(obj) and _is_factory(obj):
        try:
            obj = obj()
        except Exception as exc:
            msg = f"calling {attr}() to get the source raised {type(exc).__name__}: {exc}"
            raise TargetError(msg) from exc
    return obj


def _load_file(name: str) -> Any:
    """Import FILE.py as the module its name says, from its directory (added at the end of sys.path, so it
    shadows nothing), so that worker processes and Ray workers, which get this sys.path, import the same module to
    unpickle its sources."""
    path = Path(name)
    if not path.is_file():
        msg = f"no such file: {name}"
        raise TargetError(msg)
    where = path.resolve()
    if str(where.parent) not in sys.path:
        sys.path.append(str(where.parent))
    stem = path.stem
    found = importlib.util.find_spec(stem) if stem.isidentifier() else None
    if found is not None and found.origin is not None and Path(found.origin).resolve() == where:
        try:
            return importlib.import_module(stem)
        except (Exception, SystemExit) as exc:
            msg = f"{name} raised {type(exc).__name__} while loading: {exc}"
            raise TargetError(msg) from exc
    # the file's name is taken (e.g. a standard module): load it privately; threads and serial work, but worker
    # processes could not import it by name
    private = f"_tfbridge_target_{''.join(c if c.isalnum() else '_' for c in stem)}"
    warnings.warn(
        f"{name} is loaded as {private!r} because the module name {stem!r} is taken; worker processes "
        "(--executor process or ray) cannot import it under that name.\nHint: rename the file.",
        TfBridgeWarning,
        stacklevel=2,
    )
    spec = importlib.util.spec_from_file_location(private, path)
    if spec is None or spec.loader is None:
        msg = f"cannot load {name} as Python"
        raise TargetError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[private] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        msg = f"{name} raised {type(exc).__name__} while loading: {exc}"
        raise TargetError(msg) from exc
    return module


def _arguments_needed(obj: Any) -> list[str]:
    """The parameters a class, function or method TARGET must be given (none: it can be called bare, or it is
    not such a callable, or its signature is unknown)."""
    if not (_inspect.isclass(obj) or _inspect.isfunction(obj) or _inspect.ismethod(obj)):
        return []
    try:
        parameters = _inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    variadic = (_inspect.Parameter.VAR_POSITIONAL, _inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in parameters if p.default is p.empty and p.kind not in variadic]


def _needs_arguments(target: str, obj: Any, needed: list[str]) -> str:
    """One line: TARGET is a callable that cannot be called bare, and what to point it at instead."""
    module_part, _, attr = target.rpartition(":")
    what = (
        "a class"
        if _inspect.isclass(obj)
        else "a generator function"
        if _inspect.isgeneratorfunction(obj)
        else "a function"
    )
    if _inspect.isgeneratorfunction(obj):
        instead, example = "a generator function without arguments", f"def source(): yield from {attr}(...)"
    else:
        instead = "the source itself or at a function without arguments that returns it"
        example = f"source = {attr}(...)"
    return (
        f"{target} is {what} that needs arguments ({', '.join(needed)}), and tfbridge can call a TARGET only "
        f"without arguments; point TARGET at {instead} (e.g. add `{example}` to {module_part} and use "
        f"{module_part}:source)"
    )


def _is_factory(obj: Any) -> bool:
    """Classes and plain functions taking no arguments are factories; sources that happen to be
    callable (datasets, arrays) are not."""
    if not (_inspect.isclass(obj) or _inspect.isfunction(obj) or _inspect.ismethod(obj)):
        return False
    try:
        _inspect.signature(obj).bind()
    except (TypeError, ValueError):
        return False
    return True


def _source(args: argparse.Namespace) -> Any:
    from tfbridge.sources import adapt

    obj = load_target(args.target)
    try:
        adapt(obj, batched=_batched(args))
    except TfBridgeError as exc:
        msg = f"{args.target} is not a data source: {str(exc).splitlines()[0]}"
        raise TargetError(msg) from exc
    return obj


def _batched(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[args.batched]


def _label(args: argparse.Namespace) -> str | list[str] | None:
    labels: list[str] | None = getattr(args, "label", None)
    if not labels:
        return None
    return labels[0] if len(labels) == 1 else labels


def _executor(args: argparse.Namespace) -> Any:
    from tfbridge.executors import ExecutorOptions

    return ExecutorOptions(
        args.executor, workers=args.workers, timeout=args.timeout, ray_address=getattr(args, "ray_address", None)
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from tfbridge.report import inspect

    if args.html:
        check_output(args.html, directory=False, what="the HTML report")  # before the scan, not after
    with _output_kept_clean(args.json):
        report = inspect(
            _source(args),
            peek=args.peek,
            batched=_batched(args),
            label=_label(args),
            full=args.full,
            executor=_executor(args),
            name=args.target,
        )
    if args.html:
        path = report.to_html(args.html)
        print(f"tfbridge: wrote {path}", file=sys.stderr)
    print(report.to_json() if args.json else report)
    return 0


@contextlib.contextmanager
def _output_kept_clean(clean: bool) -> Iterator[None]:
    """While the target is loaded and read, what it prints to stdout (also from worker processes started then,
    which inherit the descriptor) goes to stderr, so the command's own output (JSON, code) stays parseable."""
    if not clean:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_code(args: argparse.Namespace) -> int:
    from tfbridge.report import inspect

    with _output_kept_clean(True):
        report = inspect(_source(args), peek=args.peek, batched=_batched(args), label=_label(args))
    casts = [f for f in report.fields if f.dtype != f.delivered_dtype]
    print(f"# Generated by tfbridge for {args.target}: the elements as tb.to_dataset delivers them.")
    for f in casts:
        print(f"# {f.path}: {f.dtype} in the data, {f.delivered_dtype} here (cast_floats='floatx').")
    print(report.delivered.code(), end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tfbridge._bench import measure, plain_from_generator, plain_stream
    from tfbridge.pipeline import to_dataset
    from tfbridge.sources import adapt

    source = _source(args)
    batched = _batched(args)
    src = adapt(source, batched=batched)
    if src.native_route is not None:
        msg = (
            f"{args.target} runs without Python ({src.native_route.split(';')[0]}); bench compares ways of running "
            "a Python source (__getitem__, a generator function or an iterable)"
        )
        raise TargetError(msg)
    if src.one_shot:
        msg = (
            f"{args.target} is an iterator, which can be read only once, and bench reads the source anew for each "
            "method and repetition; make TARGET a generator function or a re-iterable (such as a list)"
        )
        raise TargetError(msg)
    signature = src.infer(args.peek, None).spec.signature
    executor = _executor(args)
    plain = (
        (lambda: plain_from_generator(src.obj, signature))
        if src.random_access
        else (lambda: plain_stream(src.obj, signature))
    )
    runs = [
        (
            f"tfbridge executor={args.executor}" + (f" workers={args.workers}" if args.workers else ""),
            lambda: to_dataset(source, executor=executor, batched=batched, peek=args.peek),
        ),
        ("plain from_generator", plain),
    ]
    warmup = max(1, min(8, (src.length() or 4) // 4))
    rows = []
    for name, make in runs:
        m = measure(name, make, repeats=args.repeats, warmup=warmup, window_s=args.seconds, min_elements=1)
        rows.append(m)
        if not m.error:
            low, high = m.spread
            print(f"{name:45s} {m.median:10.1f} elements/s  [{low:.1f} .. {high:.1f}]  over {m.timed_over}",
                  flush=True)
    failed = [m for m in rows if m.error]
    for m in failed:  # after the rows that worked, one line each
        print(f"tfbridge: bench: {m.name} failed: {m.error}", file=sys.stderr)
    if failed:
        return 1
    print(f"tfbridge / plain from_generator: {rows[0].median / rows[1].median:.2f}x")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    check_output(args.path, directory=True, what="the materialized data")  # before the source runs
    source = _source(args)
    from tfbridge.materialize import run

    outcome = run(
        source,
        args.path,
        executor=_executor(args),
        shards=args.shards,
        compression=args.compression,
        batched=_batched(args),
        label=_label(args),
        verbose=True,
        overwrite=args.overwrite,
    )
    done = (
        f"reused, not re-run: {args.path} already holds the {outcome.elements} elements of this source"
        if outcome.reused
        else f"wrote {outcome.elements} elements to {args.path}"
    )
    print(
        f"tfbridge: {done}; load them in order with "
        f"load({str(args.path)!r}) after `from tfbridge.materialize import load`, or with "
        f"tf.data.Dataset.load({str(args.path)!r}"
        f"{'' if args.compression is None else f', compression={args.compression!r}'}) (shards interleaved)"
    )
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from tfbridge import service

    if args.role == "dispatcher":
        server = service.dispatcher(port=args.port, work_dir=args.work_dir, worker_timeout=args.worker_timeout)
        line = f"tfbridge: tf.data service dispatcher listening on {service.address(server)}"
    else:
        worker_address = None if args.host is None else f"{args.host}:%port%"
        server = service.worker(
            args.dispatcher,
            port=args.port,
            worker_address=worker_address,
            connect_timeout=args.connect_timeout,
            heartbeat_interval=args.heartbeat_interval,
        )
        where = service.address(server)
        if args.host is not None:
            where = f"grpc://{args.host}:{where.rpartition(':')[2]}"
        line = f"tfbridge: tf.data service worker listening on {where}, registered with {args.dispatcher}"
    _serve_until_stopped(server, line)
    print(f"tfbridge: tf.data service {args.role} stopped", file=sys.stderr, flush=True)
    # Nothing is left to do; skip TensorFlow's interpreter-exit teardown (a second or more, and the place where
    # its C++ threads have been seen to hang or abort).
    sys.stdout.flush()
    os._exit(0)


def _serve_until_stopped(server: object, line: str) -> None:
    """Print ``line`` (flushed: a parent process waits for it), then block until SIGTERM or SIGINT (or the server
    ends by itself) and stop the server.

    The handlers are in place before the line is printed, so a parent that signals as soon as it reads the line
    still gets a clean exit. ``server.join()`` runs in a daemon thread: it blocks in C++ where Python signal
    handlers never run, so the main thread waits on an event instead and stays able to receive the signal.
    """
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def join() -> None:
        try:
            server.join()  # type: ignore[attr-defined]
        finally:
            done.set()

    joiner = threading.Thread(target=join, name="tfbridge-service-join", daemon=True)
    joiner.start()
    try:
        print(line, flush=True)
        while not done.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()  # type: ignore[attr-defined]
        # join() returns once the server has stopped. Wait for it: a daemon thread still inside TensorFlow's C++
        # join when the interpreter finalizes aborts the process ("FATAL: exception not rethrown").
        joiner.join(_SERVICE_STOP_TIMEOUT_S)
        if joiner.is_alive():
            print(
                f"tfbridge: the server did not stop within {_SERVICE_STOP_TIMEOUT_S:g} s; exiting",
                file=sys.stderr,
                flush=True,
            )
            sys.stdout.flush()
            os._exit(1)


def cmd_demo(args: argparse.Namespace) -> int:
    from tfbridge._demo import run

    run()
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a positive int. Received: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        msg = f"must be a positive number. Received: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        msg = f"must be a port number from 0 to 65535. Received: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _address(text: str) -> str:
    """``host:port`` or ``grpc://host:port`` -> ``grpc://host:port``; a bad form is a usage error (exit 2)."""
    from tfbridge.service import parse_address

    try:
        return parse_address(text, what="the address")[0]
    except TfBridgeError as exc:
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0] + f" Received: {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfbridge", description="Turn any training-data source into correct, fast TensorFlow/Keras input."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_target(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "target",
            metavar="TARGET",
            help="MODULE:OBJECT or FILE.py:OBJECT (a source or a zero-argument callable returning one)",
        )
        p.add_argument("--peek", type=_positive_int, default=8, help="elements to sample (default 8)")
        p.add_argument(
            "--batched",
            choices=("auto", "yes", "no"),
            default="auto",
            help="whether an element is a batch (default: by the kind of source)",
        )
        p.add_argument(
            "--label", action="append", metavar="COLUMN", help="split this column off as the label (repeat for several)"
        )

    def with_executor(p: argparse.ArgumentParser, default: str = "auto") -> None:
        p.add_argument(
            "--executor",
            choices=("auto", "serial", "thread", "process", "ray"),
            default=default,
            help="who produces a Python source's elements (default: auto)",
        )
        p.add_argument("--workers", type=_positive_int, default=None, help="threads, processes or Ray tasks")
        p.add_argument(
            "--timeout",
            type=_positive_float,
            default=None,
            metavar="SECONDS",
            help="seconds any one element may take (default: no limit)",
        )
        p.add_argument("--ray-address", default=None, help="with --executor ray: an existing Ray cluster")

    p = sub.add_parser("inspect", help="spec, varying dimensions, dtypes and float casts, executor choice")
    with_target(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--full",
        action="store_true",
        help="scan every element (statistics over all; reports dimensions the peek got wrong)",
    )
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML report with plots")
    with_executor(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("code", help="print output_signature and keras.Input code for a source")
    with_target(p)
    p.set_defaults(func=cmd_code)

    p = sub.add_parser("bench", help="tfbridge beside plain from_generator on your source, same run")
    with_target(p)
    with_executor(p)
    p.add_argument("--seconds", type=_positive_float, default=3.0,
                   help="seconds timed per repetition, at least (default 3): whole passes over the source until "
                   "they fill it, or this long inside one pass that is longer")
    p.add_argument("--repeats", type=_positive_int, default=3,
                   help="repetitions per method, each a fresh dataset (default 3)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "materialize",
        help="run a source once and write it in tf.data's save format "
        "(graph-native to load; the tf.data service can distribute it)",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        help="MODULE:OBJECT or FILE.py:OBJECT (a source or a zero-argument callable returning one)",
    )
    p.add_argument("path", metavar="PATH", help="directory to write (an interrupted run continues there)")
    with_executor(p)
    p.add_argument("--shards", type=_positive_int, default=None, help="number of shard files")
    p.add_argument("--compression", default=None, help="GZIP or SNAPPY (default: none)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the materialization at PATH (of another source, or of this one before it changed)",
    )
    p.add_argument(
        "--batched",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether an element is a batch (default: by the kind of source)",
    )
    p.add_argument(
        "--label", action="append", metavar="COLUMN", help="split this column off as the label (repeat for several)"
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("service", help="start a tf.data service dispatcher or worker (runs until killed)")
    roles = p.add_subparsers(dest="role", required=True)
    r = roles.add_parser("dispatcher", help="start a dispatcher; prints the address for tb.distribute")
    r.add_argument("--port", type=_port, default=5050, help="port to listen on (default 5050; 0: any free port)")
    r.add_argument(
        "--work-dir",
        metavar="DIR",
        default=None,
        help="keep the dispatcher's journal here, so a restarted dispatcher recovers its jobs",
    )
    r.add_argument(
        "--worker-timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="declare a worker lost after this long without a heartbeat (default: TensorFlow's, 600); an epoch "
        "waiting for a dead worker still waits until a worker restarts at its address",
    )
    r.set_defaults(func=cmd_service)
    r = roles.add_parser("worker", help="start a worker registered with a dispatcher")
    r.add_argument(
        "--dispatcher",
        metavar="HOST:PORT",
        required=True,
        type=_address,
        help="the dispatcher's address, host:port or grpc://host:port",
    )
    r.add_argument(
        "--port",
        type=_port,
        default=0,
        help="port to listen on (default 0: any free port); with a fixed port, a worker restarted after a crash "
        "takes over the dead one's tasks, which a running epoch waits for",
    )
    r.add_argument(
        "--host",
        default=None,
        help="name clients reach this worker by (default localhost; set it when clients run elsewhere)",
    )
    r.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the dispatcher to accept connections (default 60)",
    )
    r.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="how often to report to the dispatcher (default: TensorFlow's, 30); keep it well below the "
        "dispatcher's --worker-timeout",
    )
    r.set_defaults(func=cmd_service)

    p = sub.add_parser("demo", help="the seed scenarios end to end on built-in data")
    p.set_defaults(func=cmd_demo)
    return parser


# The Python API's keyword arguments that the command line takes as flags, as messages write them: the name, then
# a value in Python's notation (a constant, a quoted string, a list of them or a number) or nothing (``label=``).
_KEYWORD = re.compile(
    r"\b(?P<name>batched|label|executor|workers|timeout|peek|overwrite|ray_address)="
    r"(?P<value>True|False|None|'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\d+(?:\.\d+)?(?!\d))?(?![\w=\[('\"])"
)
_BOTH = re.compile(r"\b\w+=\S+ \((--[\w-]+) on the command line\)")  # "overwrite=True (--overwrite on the ...)"
_CODE = re.compile(r"`[^`]*`|[\w.]+\([^()]*(?:\([^()]*\)[^()]*)*\)")  # `quoted code`, and calls: f(a, g(b))
_BATCHED = {"True": "yes", "False": "no", "None": "auto"}


def for_the_command_line(message: str) -> str:
    """``message`` with the keyword arguments of its ``Hint:`` lines written as the command line's flags
    (``batched=False`` -> ``--batched no``, ``label='y'`` -> ``--label y``); the rest of the message, code quoted
    in backticks or written as a call, and keywords the command line has no flag for stay as they are."""
    return "\n".join(_flags(line) if line.startswith("Hint:") else line for line in message.split("\n"))


def _flags(line: str) -> str:
    line = _BOTH.sub(r"\1", line)
    code = [m.span() for m in _CODE.finditer(line)]

    def flag(m: re.Match[str]) -> str:
        if any(start <= m.start() < end for start, end in code):
            return m.group(0)
        name, value = m.group("name"), m.group("value")
        option = "--" + name.replace("_", "-")
        if value is None:
            return option
        if name == "batched":
            return f"{option} {_BATCHED[value]}" if value in _BATCHED else m.group(0)
        if name == "overwrite":
            return option if value == "True" else m.group(0)
        if value in ("True", "False", "None"):
            return m.group(0)
        try:
            given = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return m.group(0)
        if isinstance(given, list):
            if not given or not all(isinstance(v, str) for v in given) or name != "label":
                return m.group(0)
            return " ".join(f"{option} {shlex.quote(v)}" for v in given)
        return f"{option} {shlex.quote(str(given))}"

    return _KEYWORD.sub(flag, line)


def _warnings_shown_by(python_format: Any) -> Any:
    """A ``warnings.formatwarning`` showing tfbridge's warnings as the command line's own lines (``tfbridge:
    TfBridgeWarning: ...``, hints naming flags) and others with ``python_format``."""

    def format_warning(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        if issubclass(category, TfBridgeWarning):
            return f"tfbridge: {category.__name__}: {for_the_command_line(str(message))}\n"
        return str(python_format(message, category, filename, lineno, line))

    return format_warning


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    shown = warnings.formatwarning
    warnings.formatwarning = _warnings_shown_by(shown)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that went away (``| head``) is caught below
        return code
    except BrokenPipeError:  # the reader of our output stopped reading: nothing left to say, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush at exit would fail again
        return 0
    except TargetError as exc:
        print(f"tfbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TfBridgeError as exc:
        if isinstance(exc, SourceError) and exc.traceback and exc.traceback not in str(exc):
            print(exc.traceback, end="", file=sys.stderr)  # the source's own code, which the hint says is above
        print(f"tfbridge: {type(exc).__name__}: {for_the_command_line(str(exc))}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":
    sys.exit(main())

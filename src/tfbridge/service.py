"""tf.data service: ``distribute`` a graph-native pipeline; start dispatcher and worker servers.

A tf.data service worker is another process, usually on another machine. It receives the dataset's serialized
graph and runs it; it cannot call back into Python functions that live in the process that built the dataset
(``Dataset.from_generator``, ``tf.py_function``, ``tf.numpy_function``). ``distribute`` therefore looks through
the graph, including every function of its function library, and refuses such pipelines with the reason, before
TensorFlow would let the job fail on the worker with "Could not find callback with key=pyfunc_0 in the registry".

TensorFlow is imported inside the functions: ``import tfbridge`` stays light.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Literal

from tfbridge import _tf
from tfbridge._checks import short
from tfbridge.errors import TfBridgeError

if TYPE_CHECKING:
    import tensorflow as tf

ProcessingMode = Literal["distributed_epoch", "parallel_epochs"]

_PROTOCOL = "grpc"
_MAX_PORT = 65535
_CONNECT_POLL_S = 0.1
_DEFAULT_CONNECT_TIMEOUT_S = 30.0
# TensorFlow's default job garbage-collection interval (DispatcherConfig.job_gc_check_interval_ms): the dispatcher
# also looks for workers past their timeout only this often.
_TF_GC_CHECK_MS = 600_000
# DatasetToGraphV2's external_state_policy: 1 is POLICY_IGNORE (stateful ops such as random or py_function are
# serialized as they are instead of failing; we only want to look at the graph).
_POLICY_IGNORE = 1

# Op type -> the Python API that puts it into a tf.data graph.
_PYTHON_OPS = {
    "PyFunc": "Dataset.from_generator or tf.numpy_function",
    "PyFuncStateless": "tf.numpy_function(stateful=False)",
    "EagerPyFunc": "tf.py_function",
}
# Dataset ops that tf.data service cannot split among workers in "distributed_epoch" (dynamic sharding) mode
# when they are on the main chain of the pipeline; TensorFlow fails only when iteration starts.
_UNSPLITTABLE_OPS = {
    "LoadDataset": ("Dataset.load", "Cannot create split providers for dataset of type LoadDataset"),
    "SnapshotDatasetV2": ("Dataset.snapshot", "Splitting is not implemented for snapshot datasets"),
}
_ASSERT_CARDINALITY = "AssertCardinalityDataset"
_HINT_START = "Hint: start one with `tfbridge service dispatcher --port 5050` (it prints the address to use)."


def distribute(
    dataset: tf.data.Dataset,
    service: str,
    *,
    processing_mode: ProcessingMode | Any = "distributed_epoch",
    job_name: str | None = None,
    connect_timeout: float | None = _DEFAULT_CONNECT_TIMEOUT_S,
    **kwargs: Any,
) -> tf.data.Dataset:
    """``dataset`` processed by the tf.data service at ``service`` ("grpc://host:port" or "host:port").

    ``processing_mode``: "distributed_epoch" (the data split among the workers, each element at most once),
    "parallel_epochs" (every worker runs the whole dataset) or a ``tf.data.experimental.service.ShardingPolicy``.
    ``job_name`` lets several consumers share one job. Other keyword arguments go to
    ``tf.data.experimental.service.distribute``. ``connect_timeout`` (seconds): how long to wait for the
    dispatcher to accept connections before raising (None waits as long as TensorFlow does, up to an hour).

    When a worker dies mid-epoch, TensorFlow promises at most once, not exactly once. In "distributed_epoch" the
    elements the dead worker had taken but not yet delivered are lost (a few, plus what the pipeline itself
    holds: the rest of the split it was reading, which for what ``tb.materialize`` returns is a shard, a shuffle
    or prefetch buffer, a partial batch) and none is repeated. In both modes the epoch then neither ends nor
    fails: it waits, however short the dispatcher's worker timeout, until a worker starts again at the dead
    one's address (same host and port) and takes over its task. Run workers on fixed ports under something that
    restarts them, or watch the consumer (docs/RELIABILITY.md has a recipe and the figures). In
    "parallel_epochs" the restarted worker runs its copy of the dataset from the start again, so what it
    delivered before dying comes twice.

    Raises TfBridgeError for a pipeline that calls Python (``from_generator``, ``py_function``,
    ``numpy_function``): tf.data service workers cannot run it. In "distributed_epoch" mode it also refuses a
    pipeline built on ``Dataset.load``/``Dataset.snapshot``, which TensorFlow cannot split among workers (the
    message shows the ``range(k).flat_map(... .shard(k, i))`` form that can). In every mode that splits the data
    among workers it sends the pipeline without its ``assert_cardinality`` steps (such as the one on what
    ``tb.materialize`` returns): a worker that gets part of the data would fail that assertion.
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        msg = (
            "distribute takes a tf.data.Dataset.\n"
            "Hint: build one with `tb.to_dataset(source)` and, to send it to the tf.data service, write it once "
            "with `tb.materialize(source, path)`.\n"
            f"Received: {short(dataset)}"
        )
        raise TfBridgeError(msg)
    _check_processing_mode(processing_mode)
    if job_name is not None and (not isinstance(job_name, str) or not job_name):
        msg = f"job_name must be a non-empty string or None. Received: {short(job_name)}"
        raise TfBridgeError(msg)
    if connect_timeout is not None and (
        isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) or connect_timeout < 0
    ):
        msg = f"connect_timeout must be a non-negative number of seconds or None. Received: {short(connect_timeout)}"
        raise TfBridgeError(msg)
    target, host, port = parse_address(service, what="service")
    graph = _graph(dataset)
    found = _python_ops(graph)
    if found:
        raise TfBridgeError(_calls_python_message(found))
    if _is_dynamic(processing_mode):
        unsplittable = _unsplittable_op(graph)
        if unsplittable:
            raise TfBridgeError(_unsplittable_message(unsplittable))
    if connect_timeout is not None:
        _wait_for_listener(host, port, connect_timeout, what=f"tf.data service dispatcher at {target}")
    if _is_split(processing_mode):
        dataset = _without_count_assertions(dataset, graph)
    transform = tf.data.experimental.service.distribute(
        processing_mode=processing_mode, service=target, job_name=job_name, **kwargs
    )
    return dataset.apply(transform)


def python_ops(dataset: tf.data.Dataset) -> list[tuple[str, str]]:
    """The Python-calling ops in ``dataset``'s graph as ``(op type, where)`` pairs, ``where`` being "the dataset
    graph" or "function 'name'" (from_generator puts its PyFunc inside a function of the graph's library)."""
    return _python_ops(_graph(dataset))


def _graph(dataset: tf.data.Dataset) -> Any:
    """``dataset``'s serialized graph as a ``GraphDef``: the dataset ops plus the function library."""
    import tensorflow as tf

    try:
        serialized = tf.raw_ops.DatasetToGraphV2(
            input_dataset=_tf.variant_tensor(dataset),
            external_state_policy=_POLICY_IGNORE,
            strip_device_assignment=True,
        )
    except Exception as exc:
        msg = (
            "distribute cannot serialize this dataset's graph, so tf.data service workers could not receive it: "
            f"{type(exc).__name__}: {short(str(exc).strip(), 300)}\n"
            "Hint: write the data once with `tb.materialize(source, path)` and distribute the loaded dataset."
        )
        raise TfBridgeError(msg) from exc
    return _tf.graph_def(serialized.numpy())


def _python_ops(graph: Any) -> list[tuple[str, str]]:
    found = [(node.op, "the dataset graph") for node in graph.node if node.op in _PYTHON_OPS]
    for function in graph.library.function:
        where = f"function {function.signature.name!r}"
        found += [(node.op, where) for node in function.node_def if node.op in _PYTHON_OPS]
    return found


def _calls_python_message(found: list[tuple[str, str]]) -> str:
    ops = sorted({op for op, _ in found})
    listed = "; ".join(
        f"{op} (from {_PYTHON_OPS[op]}) in " + ", ".join(sorted({where for o, where in found if o == op})[:3])
        for op in ops
    )
    return (
        f"distribute refuses this dataset: its pipeline calls Python ({', '.join(ops)}).\n"
        f"Found: {short(listed, 400)}\n"
        "A tf.data service worker runs the dataset's graph in another process, usually on another machine, and "
        "cannot call back into the Python functions of this process: the job would fail there with "
        '"Could not find callback with key=pyfunc_0 in the registry".\n'
        "Hint: write the data once with `tb.materialize(source, path)`; the dataset it returns is graph-native "
        "and can be distributed. To spread the Python work itself over machines, use `tb.to_dataset(source, "
        'executor="ray")` instead of the tf.data service.'
    )


def _is_dynamic(processing_mode: Any) -> bool:
    from tensorflow.data.experimental.service import ShardingPolicy

    return bool(processing_mode == "distributed_epoch" or processing_mode == ShardingPolicy.DYNAMIC)


def _main_chain(graph: Any) -> list[Any]:
    """The pipeline's main chain: its ops from the sink back to the source, along each op's first dataset input.
    Datasets captured by functions (e.g. a ``Dataset.load`` inside ``flat_map``) are not on it: the tf.data
    service builds them per split."""
    nodes = {node.name: node for node in graph.node}
    sink = next((node for node in graph.node if node.op == "_Retval"), None)
    node = nodes.get(_node_name(sink.input[0])) if sink is not None and sink.input else None
    chain: list[Any] = []
    seen: set[str] = set()
    while node is not None and node.name not in seen:
        seen.add(node.name)
        chain.append(node)
        inputs = (nodes.get(_node_name(name)) for name in node.input)
        node = next((n for n in inputs if n is not None and "Dataset" in n.op), None)
    return chain


def _node_name(text: str) -> str:
    return text.lstrip("^").split(":")[0]


def _unsplittable_op(graph: Any) -> str | None:
    """The first op on the main chain that the tf.data service cannot split dynamically."""
    return next((str(node.op) for node in _main_chain(graph) if node.op in _UNSPLITTABLE_OPS), None)


def _is_split(processing_mode: Any) -> bool:
    """Whether each worker gets only some of the data (every mode but "parallel_epochs", i.e. sharding OFF)."""
    from tensorflow.data.experimental.service import ShardingPolicy

    return not (processing_mode == "parallel_epochs" or processing_mode == ShardingPolicy.OFF)


def _without_count_assertions(dataset: tf.data.Dataset, graph: Any) -> tf.data.Dataset:
    """``dataset`` without the ``assert_cardinality`` steps of its main chain (what ``tb.materialize`` returns
    has one), rebuilt from its graph; ``dataset`` itself when it has none.

    A worker that gets only some of the splits delivers fewer elements than the assertion says, and TensorFlow
    would fail the job with "Input dataset was expected to contain N elements"; the distributed dataset's
    cardinality is the service's business anyway.
    """
    import tensorflow as tf

    skip = {node.name: _node_name(node.input[0]) for node in _main_chain(graph) if node.op == _ASSERT_CARDINALITY}
    if not skip:
        return dataset

    def past_assertions(name: str) -> str:
        while name in skip:
            name = skip[name]
        return name

    kept = [node for node in graph.node if node.name not in skip]
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if _node_name(name) in skip:
                node.input[k] = past_assertions(_node_name(name))
    variant = tf.raw_ops.DatasetFromGraph(graph_def=graph.SerializeToString())
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


def _unsplittable_message(op: str) -> str:
    api, tf_error = _UNSPLITTABLE_OPS[op]
    return (
        f"distribute cannot split this dataset in processing_mode='distributed_epoch': its pipeline reads a "
        f"{api}(...) ({op}), which the tf.data service cannot divide among workers (iteration would fail with "
        f'"{tf_error}").\n'
        "Hint: distribute what tb.materialize returns (it is read one shard per split), or make the splits "
        "yourself, one per part, with the reading inside flat_map, e.g. "
        "`tf.data.Dataset.range(k).flat_map(lambda i: tf.data.Dataset.load(path).shard(k, i))` (each element "
        "still delivered once); or use processing_mode='parallel_epochs', where every worker reads all of it."
    )


def _check_processing_mode(processing_mode: Any) -> None:
    from tensorflow.data.experimental.service import ShardingPolicy

    if isinstance(processing_mode, ShardingPolicy):
        return
    if isinstance(processing_mode, str) and processing_mode in ("distributed_epoch", "parallel_epochs"):
        return
    msg = (
        "processing_mode must be 'distributed_epoch' (each element once, split among the workers), "
        "'parallel_epochs' (every worker runs the whole dataset) or a "
        f"tf.data.experimental.service.ShardingPolicy. Received: {short(processing_mode)}"
    )
    raise TfBridgeError(msg)


def parse_address(address: Any, *, what: str = "service") -> tuple[str, str, int]:
    """``"grpc://host:port"`` or ``"host:port"`` -> ``("grpc://host:port", host, port)``; TfBridgeError otherwise."""
    form = f"{what} must be 'grpc://host:port' or 'host:port', e.g. 'grpc://localhost:5050'."
    if not isinstance(address, str):
        msg = f"{form}\n{_HINT_START}\nReceived: {short(address)}"
        raise TfBridgeError(msg)
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        scheme, rest = _PROTOCOL, address.strip()
    if scheme != _PROTOCOL:
        msg = f"{form} The tf.data service servers speak {_PROTOCOL}://, not {scheme}://.\nReceived: {address!r}"
        raise TfBridgeError(msg)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host or "/" in rest:
        msg = f"{form}\n{_HINT_START}\nReceived: {address!r}"
        raise TfBridgeError(msg)
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port <= _MAX_PORT:
        msg = f"{form} The port must be a number from 1 to {_MAX_PORT}.\nReceived: {address!r}"
        raise TfBridgeError(msg)
    return f"{_PROTOCOL}://{host}:{port}", host, port


def _wait_for_listener(host: str, port: int, timeout: float, *, what: str) -> None:
    """Return once something accepts TCP connections at host:port; TfBridgeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    while True:
        try:
            with socket.create_connection((bare, port), timeout=max(0.5, min(5.0, timeout))):
                return
        except socket.gaierror as exc:
            msg = f"cannot resolve the host of the {what}: {exc}\nHint: check the host name."
            raise TfBridgeError(msg) from exc
        except OSError as exc:
            if time.monotonic() >= deadline:
                msg = (
                    f"no {what} (nothing accepted a connection within {timeout:g} s: {exc.strerror or exc}).\n"
                    f"{_HINT_START}"
                )
                raise TfBridgeError(msg) from exc
        time.sleep(_CONNECT_POLL_S)


def _check_port(port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
        msg = f"port must be an int from 0 (any free port) to {_MAX_PORT}. Received: {short(port)}"
        raise TfBridgeError(msg)
    if port == 0:
        return
    # gRPC binds with SO_REUSEPORT, so a second server on a taken port would start and silently share it.
    # A bind without SO_REUSEPORT fails on a port that a listening socket holds. SO_REUSEADDR lets it pass the
    # connections a killed server left in TIME_WAIT, so a worker restarted on its port after a crash starts.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            msg = (
                f"port {port} is already in use on this machine.\nHint: pick another port, or port 0 for any free one."
            )
            raise TfBridgeError(msg) from exc


def dispatcher(
    port: int = 0,
    work_dir: str | os.PathLike[str] | None = None,
    *,
    fault_tolerant_mode: bool | None = None,
    worker_addresses: list[str] | None = None,
    worker_timeout: float | None = None,
) -> Any:
    """Start a tf.data service dispatcher in this process; returns the running
    ``tf.data.experimental.service.DispatchServer`` (``address(server)`` is the address for ``distribute``).

    ``port=0`` picks a free port. ``work_dir`` keeps the dispatcher's journal so that a restarted dispatcher
    recovers its state; ``fault_tolerant_mode`` defaults to True when ``work_dir`` is given.
    ``worker_addresses`` is the fixed worker list that static sharding policies need.

    ``worker_timeout`` (seconds; None: TensorFlow's default, 10 minutes in TensorFlow 2.21): how long a worker
    may go without a heartbeat before the dispatcher declares it lost (it logs "Lost worker ... due to
    timeout"). TensorFlow looks for such workers on its job garbage-collection interval (10 minutes); with a
    shorter ``worker_timeout`` that interval is shortened to it, so a worker is declared lost within about twice
    ``worker_timeout``. Keep it well above the workers' heartbeat interval. Declaring a worker lost does not end
    an epoch that waits for it: only a worker started again at its address does (see ``distribute``).
    """
    _check_port(port)
    worker_timeout_ms = _milliseconds(worker_timeout, "worker_timeout")
    if fault_tolerant_mode is None:
        fault_tolerant_mode = work_dir is not None
    if fault_tolerant_mode and work_dir is None:
        msg = "fault_tolerant_mode=True needs a work_dir to keep the dispatcher's journal in."
        raise TfBridgeError(msg)
    if work_dir is not None:
        os.makedirs(work_dir, exist_ok=True)
    import tensorflow as tf

    svc = tf.data.experimental.service
    config = svc.DispatcherConfig(
        port=port,
        work_dir=None if work_dir is None else os.fspath(work_dir),
        fault_tolerant_mode=bool(fault_tolerant_mode),
        worker_addresses=worker_addresses,
        worker_timeout_ms=worker_timeout_ms,
        job_gc_check_interval_ms=None if worker_timeout_ms is None else min(worker_timeout_ms, _TF_GC_CHECK_MS),
    )
    return svc.DispatchServer(config)


def worker(
    dispatcher_address: str,
    port: int = 0,
    *,
    worker_address: str | None = None,
    connect_timeout: float | None = 60.0,
    heartbeat_interval: float | None = None,
) -> Any:
    """Start a tf.data service worker in this process, registered with the dispatcher at
    ``dispatcher_address`` ("grpc://host:port" or "host:port"); returns the running
    ``tf.data.experimental.service.WorkerServer``.

    ``port=0`` picks a free port; a fixed port lets a worker restarted after a crash take over the tasks of the
    one that died, which an epoch in progress waits for (see ``distribute``). ``worker_address`` is the address
    clients reach this worker at, in TensorFlow's form ("host:%port%" stands for the bound port; default
    "localhost:%port%", so set it when clients run on other machines). ``connect_timeout`` (seconds): how long
    to wait for the dispatcher to accept connections (TensorFlow alone would wait silently); None skips the
    wait. ``heartbeat_interval`` (seconds; None: TensorFlow's default, 30 s in TensorFlow 2.21): how often the
    worker reports to the dispatcher; keep it well below the dispatcher's ``worker_timeout``.
    """
    _check_port(port)
    heartbeat_interval_ms = _milliseconds(heartbeat_interval, "heartbeat_interval")
    target, host, dispatcher_port = parse_address(dispatcher_address, what="dispatcher_address")
    if connect_timeout is not None:
        _wait_for_listener(host, dispatcher_port, connect_timeout, what=f"tf.data service dispatcher at {target}")
    import tensorflow as tf

    svc = tf.data.experimental.service
    config = svc.WorkerConfig(
        dispatcher_address=f"{host}:{dispatcher_port}",
        worker_address=worker_address,
        port=port,
        heartbeat_interval_ms=heartbeat_interval_ms,
    )
    return svc.WorkerServer(config)


def _milliseconds(seconds: Any, name: str) -> int | None:
    """``seconds`` (a positive number, or None for TensorFlow's default) as whole milliseconds, at least 1."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        msg = (
            f"{name} must be a positive number of seconds, or None for TensorFlow's default. "
            f"Received: {short(seconds)}"
        )
        raise TfBridgeError(msg)
    return max(1, round(seconds * 1000))


def address(server: Any) -> str:
    """``"grpc://localhost:PORT"`` for a server started by :func:`dispatcher` or :func:`worker` (the bound port,
    also when it was started with port 0)."""
    target = getattr(server, "target", None)
    if isinstance(target, str):
        return target
    return f"{_PROTOCOL}://{_tf.server_address(server)}"

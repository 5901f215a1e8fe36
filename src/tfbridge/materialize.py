"""materialize: run a Python source once, in parallel, and keep it in tf.data's own save format.

The source is written in parts (one ``Dataset.save`` per part, into ``PATH/.parts/``), each first under a
temporary name and renamed when complete, so a run that is interrupted continues where it stopped: finished
parts are kept, a half-written one is thrown away and written again, and nothing half-written is ever read.
When every part is there their shard files are moved into one saved dataset at ``PATH`` itself (shard k = part
k; nothing is written twice), ``PATH/tfbridge-materialize.json`` records the spec and marks the run complete,
and the result loads ``PATH`` with ``Dataset.load`` one shard after another: in source order, graph-native (later
epochs skip Python), and split by shard, so the tf.data service can distribute it in ``distributed_epoch`` mode.
Another program reads it with ``tfbridge.materialize.load(PATH)`` or ``tf.data.Dataset.load(PATH)`` (which
interleaves the shards: every element, not in source order).

Indexed sources (PyDataset/Sequence, ``__len__``/``__getitem__``) are split by index ranges and run through the
executors, part after part on one pool of workers. A stream (generator, iterable, tf.data pipeline) can only be
read from its start, so it is written as one part: an interrupted run writes it again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge import _tf, executors
from tfbridge._checks import check_int, short
from tfbridge._progress import progress_bar
from tfbridge.errors import TfBridgeError
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label
from tfbridge.spec import CastFloats, Spec

if TYPE_CHECKING:
    import tensorflow as tf

MANIFEST = "tfbridge-materialize.json"
_FORMAT = 1
_PARTS = ".parts"
_COUNT = "tfbridge.count"
_DEFAULT_SHARDS = 16
_COMPRESSIONS = (None, "GZIP", "SNAPPY")


def materialize(
    source: Any,
    path: str | os.PathLike[str],
    *,
    executor: ExecutorName | ExecutorOptions = "auto",
    workers: int | None = None,
    shards: int | None = None,
    compression: str | None = None,
    spec: Spec | Any = None,
    batched: bool | None = None,
    cast_floats: CastFloats = "floatx",
    label: Label | None = None,
    timeout: float | None = None,
    ray_address: str | None = None,
    verbose: bool | None = None,
) -> tf.data.Dataset:
    """Write ``source`` once to ``path`` in tf.data's save format and return it loaded (``Dataset.load``).

    ``shards``: how many parts an indexed source is written in (the unit of resuming; default 16).
    ``compression``: None, "GZIP" or "SNAPPY". The other arguments are those of ``to_dataset``. Calling it
    again on a complete ``path`` with the same source returns the saved data without running the source.
    ``verbose`` shows a progress bar (None: when stderr is a terminal).
    """
    from tfbridge import pipeline
    from tfbridge.sources import BuildPlan

    check_int("shards", shards, optional=True)
    if compression not in _COMPRESSIONS:
        msg = f"compression must be None, 'GZIP' or 'SNAPPY'. Received: {short(compression)}"
        raise TfBridgeError(msg)
    options = executors.resolve(executor, workers=workers, timeout=timeout, ray_address=ray_address)
    root = Path(path)
    p = pipeline.plan(
        source, spec=spec, batched=batched, executor=options, cast_floats=cast_floats, validate="peek", label=label
    )
    src = p.source
    total = src.length()
    parts = src.parts(shards or _DEFAULT_SHARDS) if total else [src]
    n_parts = len(parts) if src.random_access and src.native_route is None else None
    wanted = {
        "format": _FORMAT,
        "spec": json.loads(p.spec.to_json()),
        "elements": total,
        "shards": n_parts,
        "compression": compression,
    }
    if total == 0:
        msg = f"the source {src.name} is empty: there is nothing to materialize.\nHint: check that it yields data."
        raise TfBridgeError(msg)
    if src.infinite:
        msg = (
            f"the dataset {src.name} is infinite (it repeats): materialize would never finish.\n"
            "Hint: materialize one pass (before .repeat()), or take a finite part with .take(n)."
        )
        raise TfBridgeError(msg)
    manifest = _open(root, wanted)
    if manifest.get("complete"):
        return load(root)

    parts_dir = root / _PARTS
    parts_dir.mkdir(parents=True, exist_ok=True)
    for stale in parts_dir.glob("*.tmp*"):  # half-written by an interrupted run: never read, written again
        shutil.rmtree(stale, ignore_errors=True)
    bar = progress_bar(verbose, total, "element")
    written = 0
    errors: list[BaseException] = []

    def save(ds: Any, name: str) -> int:
        """Write one part under a temporary name, then rename it: a part is either whole or absent."""
        final = parts_dir / name
        tmp = parts_dir / f"{name}.tmp-{os.getpid()}"
        ds.save(str(tmp), compression=compression, shard_func=_one_shard)
        if errors:  # the source failed: this part is incomplete and is not kept
            shutil.rmtree(tmp, ignore_errors=True)
            raise errors[0]
        count = _count_elements(tmp, compression)
        (tmp / _COUNT).write_text(str(count))  # inside the part, so it is renamed with it
        os.replace(tmp, final)
        return count

    names: list[str] = []
    runner = pipeline.make_runner(p)
    try:
        for k, part in enumerate(parts):
            name = f"part-{k:05d}"
            if (parts_dir / name).is_dir():
                count = _count(parts_dir, name, compression)
            else:
                plan = BuildPlan(
                    spec=p.spec,
                    conform=True,  # every element checked before it is written for good
                    runner=runner,
                    timeout=options.timeout,
                    seconds_per_element=p.seconds_per_element,
                    bytes_per_element=p.bytes_per_element,
                    errors=errors if runner is not None else None,
                )
                count = save(part.build(plan).dataset, name)
            if count or len(parts) > 1:
                names.append(name)
            written += count
            _advance(bar, written)
    finally:
        if runner is not None:
            runner.close()
    if not names or not written:
        msg = (
            f"the source {src.name} gave no elements: there is nothing to materialize.\n"
            "Hint: check that it yields data (a one-shot iterator gives its elements only once)."
        )
        raise TfBridgeError(msg)

    _assemble(root, parts_dir, names, written)
    _write_manifest(root, {**wanted, "elements_written": written, "parts": len(names), "complete": True})
    shutil.rmtree(parts_dir, ignore_errors=True)
    if bar is not None and total is None:
        bar.update(written, finalize=True)
    return load(root)


def load(path: str | os.PathLike[str]) -> tf.data.Dataset:
    """The data ``materialize`` wrote at ``path``, in source order, graph-native.

    One split per shard (``range(shards).flat_map(shard i)``), so the tf.data service can hand whole shards to
    its workers in ``distributed_epoch`` mode (a bare ``Dataset.load`` cannot be split), and a local read
    touches each shard once.
    """
    import tensorflow as tf

    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        msg = (
            f"{root} is not a complete tfbridge materialization ({exc}).\nHint: run tb.materialize(source, path) first."
        )
        raise TfBridgeError(msg) from None
    if not manifest.get("complete"):
        msg = f"{root} is an unfinished materialization.\nHint: run tb.materialize(source, path) again to finish it."
        raise TfBridgeError(msg)
    compression, shards = manifest.get("compression"), int(manifest["parts"])
    where = os.path.abspath(root)  # the graph may run elsewhere (tf.data service workers in other directories)
    element_spec = Spec.from_json(json.dumps(manifest["spec"])).signature

    def shard(i: Any) -> Any:
        def pick(shard_datasets: Any) -> Any:
            return shard_datasets.skip(i).take(1).flat_map(lambda d: d)

        return tf.data.Dataset.load(where, element_spec, compression=compression, reader_func=pick)

    # no assert_cardinality: under the tf.data service each worker sees only its splits, and the assertion
    # would fail there; the element count is in the manifest ("elements_written")
    return tf.data.Dataset.range(shards).flat_map(shard)


def _one_shard(*_: Any) -> Any:
    """Every element of a part into one shard file, so loading reads it back in order."""
    import tensorflow as tf

    return tf.constant(0, tf.int64)


def _count(parts_dir: Path, name: str, compression: str | None) -> int:
    counted = parts_dir / name / _COUNT
    return int(counted.read_text()) if counted.exists() else _count_elements(parts_dir / name, compression)


def _count_elements(path: Path, compression: str | None) -> int:
    import tensorflow as tf

    ds = tf.data.Dataset.load(str(path), compression=compression)
    count = int(ds.cardinality())
    return count if count >= 0 else int(ds.reduce(np.int64(0), lambda c, _: c + 1))  # C++ only


def _assemble(root: Path, parts_dir: Path, names: list[str], count: int) -> None:
    """Make ``root`` one saved dataset whose shard k is part k (each part was saved as a single shard): the
    shard files move, nothing is copied or written again. The metadata file that makes it loadable comes last."""
    first = parts_dir / names[0]
    meta = _tf.snapshot_metadata()
    meta.ParseFromString((first / "snapshot.metadata").read_bytes())
    run = root / meta.run_id
    for old in root.iterdir():  # a previous run's assembly that never got its manifest marked complete
        if old.is_dir() and old.name.isdigit() and old.name != meta.run_id:
            shutil.rmtree(old, ignore_errors=True)
    run.mkdir(exist_ok=True)
    for k, name in enumerate(names):
        part = parts_dir / name
        target = run / f"{k:08d}.shard"
        if target.exists():  # moved by an assembly that was interrupted
            continue
        shard_dirs = [d for r in part.iterdir() if r.is_dir() for d in r.iterdir() if d.name.endswith(".shard")]
        if len(shard_dirs) != 1:
            msg = f"part {part} holds {len(shard_dirs)} shards, not one.\nHint: delete {root} and materialize again."
            raise TfBridgeError(msg)
        os.replace(shard_dirs[0], target)
    shutil.copyfile(first / "dataset_spec.pb", root / "dataset_spec.pb")
    meta.num_elements = count
    tmp = root / "snapshot.metadata.tmp"
    tmp.write_bytes(meta.SerializeToString())
    os.replace(tmp, root / "snapshot.metadata")


def _open(root: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """The manifest at ``root`` (written now if the directory is new); refuses a path that holds other data."""
    manifest = root / MANIFEST
    if manifest.exists():
        try:
            have: dict[str, Any] = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            msg = f"{root} has an unreadable {MANIFEST} ({exc}).\nHint: delete {root} to materialize afresh."
            raise TfBridgeError(msg) from None
        differs = [key for key in wanted if have.get(key) != wanted[key]]
        if differs:
            msg = (
                f"{root} holds a materialization of a different source or settings "
                f"({', '.join(differs)} differ{'s' if len(differs) == 1 else ''}).\n"
                f"Hint: pass another path, or delete {root} to write this source there."
            )
            raise TfBridgeError(msg)
        return have
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        msg = (
            f"{root} already exists and is not a tfbridge materialization (no {MANIFEST}); it is left as it is.\n"
            "Hint: pass a new or empty directory."
        )
        raise TfBridgeError(msg)
    root.mkdir(parents=True, exist_ok=True)
    _write_manifest(root, {**wanted, "complete": False})
    return wanted


def _write_manifest(root: Path, content: dict[str, Any]) -> None:
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


def _advance(bar: Any, written: int) -> None:
    if bar is not None:
        bar.update(written)


__all__ = ["load", "materialize"]

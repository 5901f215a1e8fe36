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

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfbridge import _nest, _tf, executors
from tfbridge._checks import check_int, find_stacklevel, short
from tfbridge._paths import write_problem
from tfbridge._progress import note, progress_bar
from tfbridge.errors import TfBridgeError, TfBridgeWarning
from tfbridge.executors import ExecutorName, ExecutorOptions
from tfbridge.sources.labels import Label
from tfbridge.spec import CastFloats, Spec
from tfbridge.validate import Conformer, RaggedParts, SparseParts

if TYPE_CHECKING:
    import tensorflow as tf

MANIFEST = "tfbridge-materialize.json"
_FORMAT = 1
_PARTS = ".parts"
_COUNT = "tfbridge.count"
_DEFAULT_SHARDS = 16
_COMPRESSIONS = (None, "GZIP", "SNAPPY")
_IDENTITY = ("source", "fingerprint")  # which source the data is from: checked apart from the settings
_NATIVE_FINGERPRINT_PEEK = 4  # elements read for the fingerprint of a source the plan does not peek (tf.data)
_PEEK = 8  # elements the plan peeks, and the fingerprint reads: the same positions whether or not the plan peeked
_MAIN = "__main__."
_LOCK = ".tfbridge-lock"
_ASSEMBLED_FILES = ("snapshot.metadata", "snapshot.metadata.tmp", "dataset_spec.pb")


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
    overwrite: bool = False,
) -> tf.data.Dataset:
    """Write ``source`` once to ``path`` in tf.data's save format and return it loaded (see :func:`load`).

    ``shards``: how many parts an indexed source is written in (the unit of resuming; default 16).
    ``compression``: None, "GZIP" or "SNAPPY". The other arguments are those of ``to_dataset``. Calling it
    again on a complete ``path`` with the same source returns the saved data without running the source
    ("reused, not re-run"); the source is recognised by its name and a fingerprint of the elements read to
    infer its spec, and a path holding another source's data (or the same source giving other values) is
    refused. ``overwrite=True`` replaces the materialization at ``path`` with this source's data.
    ``verbose`` shows progress on stderr (None: when stderr is a terminal).
    """
    return run(
        source,
        path,
        executor=executor,
        workers=workers,
        shards=shards,
        compression=compression,
        spec=spec,
        batched=batched,
        cast_floats=cast_floats,
        label=label,
        timeout=timeout,
        ray_address=ray_address,
        verbose=verbose,
        overwrite=overwrite,
    ).dataset


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` did: the loaded data, how many elements it holds, and whether they were reused."""

    dataset: tf.data.Dataset
    elements: int
    reused: bool


def run(
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
    overwrite: bool = False,
) -> Outcome:
    """:func:`materialize`, saying whether it wrote the data or reused what was there (the CLI reports it)."""
    from tfbridge import pipeline
    from tfbridge.sources import BuildPlan

    check_int("shards", shards, optional=True)
    if compression not in _COMPRESSIONS:
        msg = f"compression must be None, 'GZIP' or 'SNAPPY'. Received: {short(compression)}"
        raise TfBridgeError(msg)
    if not isinstance(overwrite, bool):
        msg = f"overwrite must be True or False. Received: {short(overwrite)}"
        raise TfBridgeError(msg)
    options = executors.resolve(executor, workers=workers, timeout=timeout, ray_address=ray_address)
    root = _directory(path)
    _check_target(root)  # before the source runs at all
    p = pipeline.plan(
        source,
        spec=spec,
        peek=_PEEK,
        batched=batched,
        executor=options,
        cast_floats=cast_floats,
        validate="peek",
        label=label,
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
    # a source seen before (the same object materialized again) is not peeked by the plan: peek it here, at the
    # positions the plan would have read, so that its fingerprint is the one written the first time
    peeked = p.peek if p.peek is not None else src.peek(_PEEK if src.native_route is None else _NATIVE_FINGERPRINT_PEEK)
    wanted |= {"source": src.name, "fingerprint": fingerprint(peeked.samples, p.spec)}
    with _locked(root, verbose):  # a second run on the path waits, then reuses or continues
        manifest = _open(root, wanted, overwrite=overwrite)
        if manifest.get("complete"):
            count = int(manifest["elements_written"])
            note(verbose, f"reused, not re-run: {root} already holds the {count} elements of {src.name}")
            return Outcome(load(root), count, reused=True)

        parts_dir = root / _PARTS
        parts_dir.mkdir(parents=True, exist_ok=True)
        for stale in parts_dir.glob("*.tmp*"):  # half-written by an interrupted run: never read, written again
            shutil.rmtree(stale, ignore_errors=True)
        bar = progress_bar(verbose, total, "element", rate_note="(producing and saving)")
        written = 0
        errors: list[BaseException] = []

        def save(ds: Any, name: str) -> int:
            """Write one part under a temporary name, then rename it: a part is either whole or absent."""
            final = parts_dir / name
            tmp = parts_dir / f"{name}.tmp-{os.getpid()}"
            try:
                ds.save(str(tmp), compression=compression, shard_func=_one_shard)
            except Exception as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                full = _disk_full(exc)
                if full is None:
                    raise
                msg = (
                    f"writing {name} of {root} failed: {full}. The parts written before it are kept.\n"
                    "Hint: free space there (or pass a path on a larger disk) and run again: a new run on the same "
                    "path continues from the parts already written."
                )
                raise TfBridgeError(msg) from None
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
                        detach=p.detach,
                    )
                    count = save(part.build(plan).dataset, name)
                if count or len(parts) > 1:
                    names.append(name)
                written += count
                if bar is not None:
                    bar.update(written)
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
        if bar is not None:
            bar.update(written, finalize=True)
        return Outcome(load(root), written, reused=False)


def _directory(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        msg = f"path must be a directory path (a str or a pathlib.Path) of a materialization. Received: {short(path)}"
        raise TfBridgeError(msg)
    return Path(path)


def load(path: str | os.PathLike[str]) -> tf.data.Dataset:
    """The data ``materialize`` wrote at ``path``, in source order, graph-native.

    One split per shard (``range(shards).flat_map(shard i)``), so the tf.data service can hand whole shards to
    its workers in ``distributed_epoch`` mode (a bare ``Dataset.load`` cannot be split), and a local read
    touches each shard once.
    """
    import tensorflow as tf

    root = _directory(path)
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

    ds = tf.data.Dataset.range(shards).flat_map(shard)
    # the count is known: Keras then knows the epoch's length (tb.distribute takes the assertion out of a pipeline
    # it splits among tf.data service workers, each of which sees only some of the shards)
    return ds.apply(tf.data.experimental.assert_cardinality(int(manifest["elements_written"])))


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


@contextlib.contextmanager
def _locked(root: Path, verbose: bool | None) -> Iterator[None]:
    """Hold the path's lock: one run writes at a time; another waits (it then finds the data written, and
    reuses it, or an interrupted run's parts, and continues). The lock goes with the process, however it ends."""
    try:
        import fcntl
    except ImportError:  # not on a POSIX system: no lock
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        msg = f"cannot write to {root}: {exc.strerror or exc}.\nHint: pass a path in a directory you can write to."
        raise TfBridgeError(msg) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(verbose, f"{root} is being written by another run; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")


def _disk_full(exc: BaseException) -> str | None:
    """The disk-space reason a write failed (TensorFlow's op errors carry the system's text), else None."""
    text = str(exc)
    return next((reason for reason in _DISK_FULL if reason in text), None)


def _check_target(root: Path) -> None:
    """Refuse, before any work, a path that cannot be written or that holds something other than a
    materialization (which is left as it is)."""
    problem = write_problem(root, directory=True)
    if problem is not None:
        msg = f"cannot write to {root}: {problem}.\nHint: pass a path in a directory you can write to."
        raise TfBridgeError(msg)
    if root.exists() and not (root / MANIFEST).exists() and any(e.name != _LOCK for e in root.iterdir()):
        msg = (
            f"{root} already exists and is not a tfbridge materialization (no {MANIFEST}); it is left as it is.\n"
            "Hint: pass a new or empty directory."
        )
        raise TfBridgeError(msg)


def _open(root: Path, wanted: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
    """The manifest at ``root`` (written now if the directory is new, or replaced with ``overwrite``); refuses a
    path that holds another source's data or other settings."""
    manifest = root / MANIFEST
    if manifest.exists() and overwrite:
        _clear(root, {**wanted, "complete": False})
        return wanted
    if manifest.exists():
        try:
            have: dict[str, Any] = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            msg = (
                f"{root} has an unreadable {MANIFEST} ({exc}).\n"
                f"Hint: pass overwrite=True (--overwrite on the command line) to materialize afresh there."
            )
            raise TfBridgeError(msg) from None
        differs = [key for key in wanted if key not in _IDENTITY and have.get(key) != wanted[key]]
        if differs:
            msg = (
                f"{root} holds a materialization of a different source or settings "
                f"({', '.join(differs)} differ{'s' if len(differs) == 1 else ''}).\n"
                f"Hint: pass another path, or overwrite=True (--overwrite on the command line) to replace it with "
                "this source's data."
            )
            raise TfBridgeError(msg)
        _check_identity(root, have, wanted)
        return have
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(root, {**wanted, "complete": False})
    except OSError as exc:
        msg = f"cannot write to {root}: {exc.strerror or exc}.\nHint: pass a path in a directory you can write to."
        raise TfBridgeError(msg) from None
    return wanted


def _check_identity(root: Path, have: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse data written from another source, or from this one when it now gives other values. A manifest of
    an earlier tfbridge that recorded no identity is taken as before, with a warning."""
    if "fingerprint" not in have:
        warnings.warn(
            f"{root} was written by an earlier tfbridge that did not record which source it holds, so it cannot "
            "be told whether it is this source's data; it is used as it is.\n"
            "Hint: pass overwrite=True (--overwrite on the command line) once to write it again from this source.",
            TfBridgeWarning,
            stacklevel=find_stacklevel(),
        )
        return
    was, now = str(have.get("source")), str(wanted["source"])
    if not _same_name(was, now):
        why = f"it was written from {was}, not {now}"
    elif have["fingerprint"] != wanted["fingerprint"]:
        why = (
            f"it was written from {was}, but the elements this source gives now differ from those written "
            "(its code, preprocessing or data changed, or it is random)"
        )
    else:
        return
    msg = (
        f"{root} holds a materialization of another source: {why}; reusing it would return stale data.\n"
        "Hint: pass overwrite=True (--overwrite on the command line) to replace it with this source's data, or "
        f"another path; to read what is there without the source, use load({str(root)!r})."
    )
    raise TfBridgeError(msg)


def _same_name(was: str, now: str) -> bool:
    """Source names match, also when one was a script run as ``__main__`` and the other its module imported."""
    return was == now or any(
        a.startswith(_MAIN) and b.endswith("." + a[len(_MAIN) :]) for a, b in ((was, now), (now, was))
    )


def fingerprint(samples: list[tuple[int, Any]], spec: Spec) -> str:
    """A hash of the content of ``samples`` (``(index, element)`` pairs, as the peek read them), each element
    converted to ``spec`` first so that equal data gives equal bytes whatever its Python types."""
    conform = Conformer(spec)
    digest = hashlib.blake2b(digest_size=16)
    for index, element in samples:
        digest.update(f"element {index}\n".encode())
        for value in _nest.flatten(conform(element, index))[0]:
            if isinstance(value, RaggedParts):
                arrays: tuple[Any, ...] = (value.flat_values, *value.nested_row_splits)
            elif isinstance(value, SparseParts):
                arrays = (value.indices, value.values, value.dense_shape)
            else:
                arrays = (value,)
            for array in map(np.asarray, arrays):
                digest.update(f"{array.dtype.str} {array.shape}\n".encode())
                if array.dtype.hasobject:  # strings
                    for item in array.ravel():
                        data = item if isinstance(item, bytes) else str(item).encode()
                        digest.update(f"{len(data)}:".encode() + data)
                else:
                    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _clear(root: Path, manifest: dict[str, Any]) -> None:
    """Remove what a materialization wrote at ``root`` and leave ``manifest`` (unfinished) in its place. Unfinished
    parts go first and the old data last, so an interruption never leaves old parts under the new manifest, nor
    old data looking complete without one."""
    shutil.rmtree(root / _PARTS, ignore_errors=True)
    _write_manifest(root, manifest)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.isdigit():  # an assembled run's shards
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name in _ASSEMBLED_FILES:
            entry.unlink(missing_ok=True)


def _write_manifest(root: Path, content: dict[str, Any]) -> None:
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(tmp, root / MANIFEST)


__all__ = ["load", "materialize"]

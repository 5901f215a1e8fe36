"""Argument checks and message helpers shared by every entry point (one owner per rule)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

_REPR_LIMIT_CHARS = 120


PAD_RAGGED_HINT = (
    "pass ragged=True for ragged batches (no padding), bucketed or not, or batch ragged fields with "
    "dataset.ragged_batch(batch_size)."
)


def short(value: Any, limit: int = _REPR_LIMIT_CHARS) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, for messages (arrays never dumped whole)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    try:
        dims = tuple(int(d) if d is not None else None for d in shape)  # type: ignore[union-attr]
    except Exception:  # no shape, or a "shape" that is something else (e.g. a module's function)
        dims = None
    if dims is not None and dtype is not None and not isinstance(value, (str, bytes)):
        text = f"{type(value).__name__}(shape={dims}, dtype={dtype})"
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 5] + " ...)" if text.endswith(")") else text[: limit - 4] + " ..."
    return text


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    optional: bool = False,
    maximum: int | None = None,
    why: str = "",
    hint: str = "",
) -> None:
    """Raise TfBridgeError unless ``value`` is an int (not a bool) >= ``minimum`` and <= ``maximum`` (or None
    when optional); ``why`` explains the maximum."""
    from tfbridge.errors import TfBridgeError

    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        msg = f"{name} must be a {kind} int{' or None' if optional else ''}. Received: {short(value)}"
        raise TfBridgeError(msg)
    if maximum is not None and value > maximum:
        msg = f"{name} must be at most {maximum:,}{': ' + why if why else ''}. Received: {short(value)}"
        if hint:
            msg += f"\nHint: {hint}"
        raise TfBridgeError(msg)


MAX_BATCH_SIZE = 2**24
MAX_BATCH_WHY = "TensorFlow reserves room for a whole batch when it starts one (near 2**30 that aborts the process)"
MAX_BATCH_HINT = "use a batch size no larger than the data."


def check_seconds(name: str, value: Any) -> None:
    """Raise TfBridgeError unless ``value`` is None or a positive finite number of seconds."""
    from tfbridge.errors import TfBridgeError

    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"))
    if not ok:
        msg = f"{name} must be a positive number of seconds or None. Received: {short(value)}"
        raise TfBridgeError(msg)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise TfBridgeError unless ``value`` is one of ``choices``."""
    from tfbridge.errors import TfBridgeError

    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        listed = ", ".join(map(repr, choices))
        msg = f"{name} must be one of {listed}. Received: {short(value)}"
        raise TfBridgeError(msg)


def check_seed(seed: Any) -> None:
    from tfbridge.errors import TfBridgeError

    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        msg = f"seed must be an int or None. Received: {short(seed)}"
        raise TfBridgeError(msg)


def check_batched(batched: Any) -> None:
    from tfbridge.errors import TfBridgeError

    if batched is not None and not isinstance(batched, bool):
        msg = f"batched must be True, False or None. Received: {short(batched)}"
        raise TfBridgeError(msg)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def find_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that points at the first frame outside tfbridge (the user's line)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def worker_died_hint(*, ray: bool = False) -> str:
    """The one hint for a worker that died without a Python error (a process, or a Ray worker or node)."""
    where = "its node went away; check the Ray dashboard/logs, or" if ray else "crashed in native code;"
    return (
        "Hint: a worker that dies without a Python error was usually killed by the system (out of memory?) or "
        f"{where} try fewer workers or executor='thread'."
    )

"""Checks shared by the fuzz tests and the regression tests of what fuzzing found: what a tfbridge error
message must look like, and whether delivered values are the values put in. Imports TensorFlow: never import
it from a module that worker processes unpickle sources from."""

from __future__ import annotations

import cmath
import re
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import currently_in_test_context, note

import tfbridge as tb

# ---- what a tfbridge error must look like ------------------------------------------------------------------

_TB_NAMES = tuple(name for name in tb.__all__ if name.endswith("Error"))
_PATH = re.compile(r"\b(?:x|y|sample_weight)(?:\[[^\]\n]*\])*")
_MESSAGE_LIMIT_CHARS = 1500
_LINE_LIMIT_CHARS = 500


def check_error(err: tb.TfBridgeError, *, needs_field: bool = True) -> None:
    """A tfbridge error names the field it is about, says what to do, and dumps no data."""
    msg = str(err)
    if currently_in_test_context():
        note(f"{type(err).__name__}: {msg}")
    assert msg, "an error without a message"
    assert len(msg) <= _MESSAGE_LIMIT_CHARS, f"message of {len(msg)} characters: values must be cut short"
    longest = max(len(line) for line in msg.splitlines())
    assert longest <= _LINE_LIMIT_CHARS, f"a line of {longest} characters: values must be cut short"
    path = getattr(err, "path", None)
    if path:
        assert path in msg, f"err.path {path!r} is not named in the message"
    if isinstance(err, tb.SpecMismatchError) and err.index is not None:
        assert f"element {err.index}" in msg
    if needs_field:
        assert "\nHint: " in msg, "a message says what to do"
        if not _PATH.search(msg) and "empty" not in msg:
            pytest.fail(f"{type(err).__name__} names no field: {msg}")


def check_op_error(err: tf.errors.OpError) -> str:
    """Inside tf.data an error is TensorFlow's, but its message begins with the tfbridge class name (after the
    ``{{function_node ...}}`` TensorFlow puts before every message of an eager iterator)."""
    msg = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", err.message)
    if currently_in_test_context():
        note(f"OpError: {msg}")
    assert msg.startswith(tuple(f"{name}: " for name in _TB_NAMES)), f"not a tfbridge error: {msg[:300]}"
    return msg


# ---- comparing delivered values with the input -----------------------------------------------------------


def as_python(value: Any) -> Any:
    """Nested Python lists / scalars of a tensor, ndarray or input value; text as bytes."""
    if isinstance(value, tf.RaggedTensor):
        return as_python(value.to_list())
    if isinstance(value, tf.Tensor):
        return as_python(value.numpy())
    if isinstance(value, np.ndarray):
        return as_python(value.tolist())
    if isinstance(value, np.generic):
        return as_python(value.item())
    if isinstance(value, (list, tuple)):
        return [as_python(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def same_values(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same_values, a, b))
    if isinstance(a, (float, complex)) and isinstance(b, (float, complex)):
        return a == b or (cmath.isnan(a) and cmath.isnan(b))
    return bool(a == b)


def check_delivered(element: Any, sample: Any, path: str = "x") -> None:
    if isinstance(sample, dict):
        assert isinstance(element, dict) and set(element) == set(sample), path
        for k in sample:
            check_delivered(element[k], sample[k], f"{path}[{k!r}]")
        return
    if isinstance(sample, (tuple, list)) and not _is_data_list(sample):
        assert isinstance(element, (tuple, list)) and len(element) == len(sample), path
        for i, (e, s) in enumerate(zip(element, sample, strict=False)):
            check_delivered(e, s, f"{path}[{i}]")
        return
    got, want = as_python(element), as_python(sample)
    assert same_values(got, want), f"{path}: delivered {got!r:.200}, put in {want!r:.200}"


def _is_data_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        _is_data_list(v) if isinstance(v, list) else isinstance(v, (bool, int, float, complex, str, bytes))
        for v in value
    )


def object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out

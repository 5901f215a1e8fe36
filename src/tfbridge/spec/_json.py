"""Spec <-> plain JSON (``{"batched": ..., "signature": ...}``), read with limits and never executed."""

from __future__ import annotations

import collections
import functools
import json
import keyword
from collections.abc import Callable
from typing import Any

from tfbridge._checks import short
from tfbridge.errors import TfBridgeError
from tfbridge.spec._model import Kind, Leaf, Spec

_DTYPES = frozenset(
    [
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "bfloat16", "float32", "float64", "complex64", "complex128", "string",
    ]
)  # fmt: skip
_JSON_KIND: dict[Kind, str] = {"dense": "tensor", "ragged": "ragged", "sparse": "sparse"}
_KIND_OF_JSON: dict[str, Kind] = {v: k for k, v in _JSON_KIND.items()}
_TYPES = "tensor, ragged, sparse, tuple, namedtuple, list, dict"
_MAX_JSON_DEPTH = 64
_MAX_DIM = 2**63 - 1  # TensorFlow's dimensions are int64


def to_json_nest(node: Any) -> Any:
    if isinstance(node, Leaf):
        out: dict[str, Any] = {"type": _JSON_KIND[node.kind], "shape": list(node.shape), "dtype": node.dtype}
        if node.kind == "ragged":
            out["ragged_rank"] = node.ragged_rank
        return out
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):
                msg = f"Spec.to_json: dict keys must be strings for JSON. Received key {short(key)}"
                raise TfBridgeError(msg)
        return {"type": "dict", "items": {k: to_json_nest(v) for k, v in node.items()}}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        items = [to_json_nest(v) for v in node]
        return {"type": "namedtuple", "name": type(node).__name__, "fields": list(node._fields), "items": items}
    if isinstance(node, tuple):
        return {"type": "tuple", "items": [to_json_nest(v) for v in node]}
    return {"type": "list", "items": [to_json_nest(v) for v in node]}


def spec_from_json(text: str | bytes) -> Spec:
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        msg = f"Spec.from_json: not valid JSON ({exc}). Received: {short(text)}"
        raise TfBridgeError(msg) from None
    if not isinstance(data, dict) or set(data) != {"batched", "signature"}:
        msg = (
            'Spec.from_json: expected an object with exactly the keys "batched" and "signature". '
            f"Received: {short(data)}"
        )
        raise TfBridgeError(msg)
    if not isinstance(data["batched"], bool):
        msg = f'Spec.from_json: "batched" must be true or false. Received: {short(data["batched"])}'
        raise TfBridgeError(msg)
    structure = _from_json_nest(data["signature"], "signature", 0)
    try:
        return Spec(structure, data["batched"])
    except TfBridgeError as exc:
        msg = f"Spec.from_json: {exc}"
        raise TfBridgeError(msg) from None


def _from_json_nest(node: Any, where: str, depth: int) -> Any:
    def bad(what: str) -> TfBridgeError:
        return TfBridgeError(f"Spec.from_json: {where}: {what}. Received: {short(node)}")

    if depth > _MAX_JSON_DEPTH:
        raise bad(f"nesting deeper than {_MAX_JSON_DEPTH}")
    if not isinstance(node, dict) or "type" not in node:
        raise bad('expected an object with a "type"')
    kind = node["type"]
    if not isinstance(kind, str):
        raise bad(f'"type" must be a string: one of {_TYPES}')
    if kind in ("tuple", "list"):
        items = node.get("items")
        if not isinstance(items, list) or set(node) != {"type", "items"}:
            raise bad(f'a {kind} needs exactly "type" and "items" (a list)')
        values = [_from_json_nest(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
        return tuple(values) if kind == "tuple" else values
    if kind == "namedtuple":
        return _namedtuple_from_json(node, where, depth, bad)
    if kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict) or set(node) != {"type", "items"}:
            raise bad('a dict needs exactly "type" and "items" (an object)')
        return {k: _from_json_nest(v, f"{where}[{k!r}]", depth + 1) for k, v in items.items()}
    if kind not in _KIND_OF_JSON:
        raise bad(f'"type" must be one of {_TYPES}')
    allowed = {"type", "shape", "dtype"} | ({"ragged_rank"} if kind == "ragged" else set())
    if not set(node) <= allowed or not {"shape", "dtype"} <= set(node):
        raise bad(f"a {kind} needs the keys {sorted(allowed)}")
    shape = node["shape"]
    if not isinstance(shape, list) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM) for d in shape
    ):
        raise bad('"shape" must be a list of non-negative integers below 2**63 (int64) or null')
    if not isinstance(node["dtype"], str) or node["dtype"] not in _DTYPES:
        raise bad(f'"dtype" must be one of {sorted(_DTYPES)}')
    ragged_rank = node.get("ragged_rank", 0)
    if kind == "ragged" and not (
        isinstance(ragged_rank, int) and not isinstance(ragged_rank, bool) and 1 <= ragged_rank < max(len(shape), 1)
    ):
        raise bad('"ragged_rank" must be an integer from 1 to rank - 1')
    return Leaf(tuple(shape), node["dtype"], _KIND_OF_JSON[kind], ragged_rank)


def _namedtuple_from_json(node: Any, where: str, depth: int, bad: Callable[[str], TfBridgeError]) -> Any:
    name, fields, items = node.get("name"), node.get("fields"), node.get("items")
    if set(node) != {"type", "name", "fields", "items"} or not isinstance(items, list):
        raise bad('a namedtuple needs exactly "type", "name", "fields" and "items" (a list)')

    def plain_name(text: Any) -> bool:  # what collections.namedtuple accepts, checked before it is called
        return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text)

    if not plain_name(name):
        raise bad('"name" must be a Python identifier')
    if not (
        isinstance(fields, list)
        and len(fields) == len(items)
        and len(set(fields)) == len(fields)
        and all(plain_name(f) and not f.startswith("_") for f in fields)
    ):
        raise bad('"fields" must be distinct Python identifiers not starting with "_", one per item')
    values = [_from_json_nest(v, f"{where}.{f}", depth + 1) for f, v in zip(fields, items, strict=True)]
    return _namedtuple_class(name, tuple(fields))(*values)


@functools.lru_cache(maxsize=256)
def _namedtuple_class(name: str, fields: tuple[str, ...]) -> Any:
    """One class per (name, fields), so specs read from JSON twice have the same nest type."""
    return collections.namedtuple(name, fields)

"""What a peek at a source object found, remembered while the object lives, so that ``to_dataset(seq)`` then
``keras_inputs(seq)`` (or a validation source passed to several calls) reads its elements once.

Only the findings are kept (the spec with its shape history, and what producing the elements cost), never the
elements: a dataset keeps its source alive, and it must not keep peeked batches alive with it. An entry is
dropped when its object is garbage-collected, and is not used once the object's attributes were rebound
(``seq.augment = False``) or its length changed; objects that cannot be weakly referenced (lists, tuples,
dicts) are not remembered.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from tfbridge.spec import Inference


@dataclass(frozen=True)
class Found:
    inference: Inference
    wall_s: float
    cpu_s: float
    count: int
    nbytes: int
    queued_s: float = 0.0
    reused_memory: bool = False  # the source returned one buffer again and again (Peek.reused_memory)


_MEMO: dict[int, tuple[weakref.ref[Any], dict[tuple[Hashable, Hashable], Found]]] = {}


def _attributes(obj: Any) -> tuple[tuple[str, int], ...]:
    """The identity of each attribute value: rebinding one (a changed preprocessing flag) invalidates."""
    try:
        items = vars(obj).items()
    except TypeError:
        return ()
    return tuple((name, id(value)) for name, value in items)


def _forget(address: int, ref: weakref.ref[Any]) -> None:
    entry = _MEMO.get(address)
    if entry is not None and entry[0] is ref:
        del _MEMO[address]


def recall(obj: Any, key: Hashable) -> Found | None:
    entry = _MEMO.get(id(obj))
    if entry is None or entry[0]() is not obj:
        return None
    return entry[1].get((key, _attributes(obj)))


def remember(obj: Any, key: Hashable, found: Found) -> None:
    entry = _MEMO.get(id(obj))
    if entry is None or entry[0]() is not obj:
        try:
            ref = weakref.ref(obj, functools.partial(_forget, id(obj)))
        except TypeError:  # not weakly referenceable: not remembered
            return
        entry = (ref, {})
        _MEMO[id(obj)] = entry
    found_for = entry[1]
    state = _attributes(obj)
    for stale in [k for k in found_for if k[1] != state]:  # findings about the object before a change
        del found_for[stale]
    found_for[(key, state)] = found

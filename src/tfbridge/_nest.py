"""Nest helpers on top of optree (the tree library Keras itself uses).

An element is a nest of tuples, lists and dicts whose leaves are tensors. A list that holds only Python
scalars, strings or further such lists is a *leaf* (a tensor written as a list, possibly ragged); a list that
holds arrays, tuples or dicts is structure (Keras's multi-input convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optree

Path = tuple[Any, ...]
_SCALARS = (bool, int, float, complex, str, bytes, np.generic)
_ROOT_NAMES = ("x", "y", "sample_weight")


def is_data_list(value: Any) -> bool:
    """True for a list written as a tensor: scalars, strings, or lists of them (possibly ragged)."""
    if not isinstance(value, list):
        return False
    for item in value:
        if isinstance(item, list):
            if not is_data_list(item):
                return False
        elif not isinstance(item, _SCALARS):
            return False
    return True


def _is_leaf(value: Any) -> bool:
    if isinstance(value, list):
        return is_data_list(value)
    return not isinstance(value, (tuple, dict))


def normalize(tree: Any) -> Any:
    """Turn mappings that are not dicts (e.g. UserDict-based batch objects) into dicts, recursively."""
    if isinstance(tree, (dict, str, bytes)):
        if isinstance(tree, dict):
            return {k: normalize(v) for k, v in tree.items()}
        return tree
    if isinstance(tree, Mapping):
        return {k: normalize(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        items = [normalize(v) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, list) and not is_data_list(tree):
        return [normalize(v) for v in tree]
    return tree


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    return optree.tree_flatten(tree, is_leaf=_is_leaf, none_is_leaf=True)


def flatten_with_paths(tree: Any) -> tuple[list[Path], list[Any], optree.PyTreeSpec]:
    return optree.tree_flatten_with_path(tree, is_leaf=_is_leaf, none_is_leaf=True)


def unflatten(treespec: optree.PyTreeSpec, leaves: list[Any]) -> Any:
    return optree.tree_unflatten(treespec, leaves)


def map_structure(fn: Any, tree: Any) -> Any:
    return optree.tree_map(fn, tree, is_leaf=_is_leaf, none_is_leaf=True)


def is_keras_tuple(tree: Any) -> bool:
    """Whether Keras splits ``tree`` into (x, y, sample_weight): a tuple (a namedtuple too) or a list of fields
    of 1, 2 or 3 items, as ``keras.utils.unpack_x_y_sample_weight`` does (tf.data delivers a list of fields as a
    tuple, so ``fit`` splits it even where Keras itself would not see the list)."""
    fields = isinstance(tree, tuple) or (isinstance(tree, list) and not is_data_list(tree))
    return fields and 1 <= len(tree) <= 3


def keras_split(tree: Any) -> tuple[Any, Any, Any]:
    """(x, y, sample_weight) by Keras's rule (:func:`is_keras_tuple`); anything else is all x."""
    if is_keras_tuple(tree):
        padded = tuple(tree) + (None,) * (3 - len(tree))
        return padded[0], padded[1], padded[2]
    return tree, None, None


def format_path(path: Path, root: Any = None) -> str:
    """Field path the way users read it: ``x['tokens']``, ``y``, ``x[2]``.

    ``root`` is the whole element's structure (for the Keras names x / y / sample_weight).
    """
    keys = list(path)
    head = _ROOT_NAMES[keys.pop(0)] if is_keras_tuple(root) and keys else "x"
    return head + "".join(f"[{k!r}]" for k in keys)


def describe_structure(tree: Any) -> str:
    """Short description of a node's kind for structure mismatch messages."""
    if isinstance(tree, dict):
        return f"dict with keys {sorted(map(str, tree))}"
    if isinstance(tree, tuple):
        return f"{type(tree).__name__} of length {len(tree)}"
    if isinstance(tree, list) and not is_data_list(tree):
        return f"list of length {len(tree)}"
    if tree is None:
        return "None"
    return "a tensor"


def structure_difference(a: Any, b: Any, path: Path = ()) -> tuple[Path, str, str] | None:
    """First place where two nests differ in structure: (path, description of a, description of b)."""
    leaf_a, leaf_b = _is_leaf(a), _is_leaf(b)
    if leaf_a or leaf_b:
        if leaf_a and leaf_b:
            if (a is None) != (b is None):
                return path, describe_structure(a), describe_structure(b)
            return None
        return path, describe_structure(a), describe_structure(b)
    if isinstance(a, dict) != isinstance(b, dict) or isinstance(a, tuple) != isinstance(b, tuple):
        return path, describe_structure(a), describe_structure(b)
    if isinstance(a, dict):
        if set(a) != set(b):
            return path, describe_structure(a), describe_structure(b)
        for key in sorted(a, key=str):
            found = structure_difference(a[key], b[key], (*path, key))
            if found:
                return found
        return None
    if len(a) != len(b):
        return path, describe_structure(a), describe_structure(b)
    for i, (va, vb) in enumerate(zip(a, b, strict=True)):  # same length: checked above
        found = structure_difference(va, vb, (*path, i))
        if found:
            return found
    return None

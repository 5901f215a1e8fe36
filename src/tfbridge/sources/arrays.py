"""In-memory columns: numpy arrays, tuples/lists/dicts of arrays, pandas DataFrames.

Each row is one example (``batched=False`` by default). The spec is read from the arrays themselves, not
peeked, so it is exact; the pipeline feeds these through tf.data's own gather, never through Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfbridge import _nest
from tfbridge import spec as _spec
from tfbridge.errors import SpecInferenceError, TfBridgeError, short
from tfbridge.sources._base import Indexed


def is_array_nest(obj: Any) -> bool:
    """An ndarray, or a tuple/dict nest whose leaves are all ndarrays (at least one).

    A top-level list is not columns but a list of elements (e.g. batches), by the Keras convention."""
    if isinstance(obj, np.ndarray):
        return True
    if not isinstance(obj, (tuple, dict)):
        return False
    leaves = _nest.flatten(obj)[0]
    return bool(leaves) and all(isinstance(v, np.ndarray) for v in leaves)


def is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def dataframe_columns(df: Any) -> dict[str, np.ndarray]:
    columns = {}
    for name in df.columns:
        if not isinstance(name, str):
            msg = f"DataFrame column names must be strings to become dict keys. Received: {short(name)}"
            raise TfBridgeError(msg)
        columns[name] = df[name].to_numpy()
    return columns


class Arrays(Indexed):
    """Rows of a nest of equally long arrays."""

    def __init__(self, obj: Any, columns: Any, batched: bool) -> None:
        self.obj = obj
        self.columns = columns
        self.batched = batched
        paths, leaves, _ = _nest.flatten_with_paths(columns)
        lengths = {_nest.format_path(p, columns): len(a) if a.ndim else None for p, a in zip(paths, leaves)}
        if None in lengths.values() or len(set(lengths.values())) > 1:
            listing = ", ".join(f"{p}: {n if n is not None else 'a scalar'}" for p, n in lengths.items())
            msg = (
                f"the arrays of the source have different numbers of rows ({listing}).\n"
                "Hint: every array needs one row per example, the same number in each."
            )
            raise SpecInferenceError(msg)
        self._len = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._len

    def get(self, index: int) -> Any:
        return _nest.map_structure(lambda a: a[index], self.columns)

    def spec(self, peek: int) -> _spec.Spec:
        if self._len == 0:
            msg = (
                "the arrays of the source are empty (0 rows): there is no element to infer a spec from.\n"
                "Hint: pass arrays with one row per example, at least one."
            )
            raise SpecInferenceError(msg)
        if self.batched:
            return super().spec(peek)
        paths, leaves, treespec = _nest.flatten_with_paths(self.columns)
        out = []
        for path, arr in zip(paths, leaves):
            if arr.dtype == object:  # strings or ragged rows: read every row, the spec stays exact
                where = _nest.format_path(path, self.columns)
                try:
                    column = _spec.infer_from_samples(list(enumerate(arr)), batched=False)
                except SpecInferenceError as exc:
                    msg = f"column {where}: {exc}"
                    raise SpecInferenceError(msg, path=where) from None
                out.append(column.structure)
            else:
                out.append(_spec.Leaf(tuple(arr.shape[1:]), _dtype(arr, _nest.format_path(path, self.columns))))
        return _spec.Spec(_nest.unflatten(treespec, out), batched=False)


def _dtype(arr: np.ndarray, where: str) -> str:
    from tfbridge._values import ValueProblem, dtype_name

    try:
        return dtype_name(arr.dtype)
    except ValueProblem as exc:
        msg = f"column {where}: {exc}.\nHint: convert such columns (e.g. dates) to numbers or strings first."
        raise SpecInferenceError(msg, path=where) from None

"""The one progress bar: Keras's Progbar, shown when asked or when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(verbose: bool | None, total: int | None, unit: str) -> Any:
    """A ``keras.utils.Progbar`` over ``total`` (None or negative: unknown) ``unit``s, or None when not shown."""
    show = sys.stderr.isatty() if verbose is None else verbose
    if not show:
        return None
    import keras

    return keras.utils.Progbar(total if total is not None and total > 0 else None, unit_name=unit)

"""Lazy optional imports with an install hint.

``import tfbridge`` must not load pandas, torch, ray, datasets or matplotlib; code that needs one calls
:func:`optional` inside the function that needs it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from tfbridge.errors import TfBridgeError

_EXTRA_OF = {
    "pandas": "pandas",
    "torch": "torch",
    "datasets": "hf",
    "ray": "ray",
    "matplotlib": "report",
}


def optional(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise a TfBridgeError saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module.split(".")[0], module)
        msg = (
            f"{purpose} needs the optional package {module!r}, which is not installed.\n"
            f'Hint: pip install "tfbridge[{extra}]"'
        )
        raise TfBridgeError(msg) from exc


def loaded(module: str) -> ModuleType | None:
    """The module if the user already imported it, else None (never imports it)."""
    return sys.modules.get(module)

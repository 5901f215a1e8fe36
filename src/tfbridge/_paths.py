"""Whether an output path can be written, asked before the work that produces what goes there."""

from __future__ import annotations

import os
from pathlib import Path


def write_problem(path: str | os.PathLike[str], *, directory: bool) -> str | None:
    """Why ``path`` cannot be written, or None when it can (as far as the file system says now).

    ``directory``: ``path`` is a directory to create or fill (missing parents are created), else a file to
    create or replace in an existing directory. An existing directory passes: what it holds may only be read
    (a complete materialization on read-only storage), so whether it can be written is left to the writing.
    """
    try:
        return _problem(Path(path), directory)
    except OSError as exc:  # the file system refuses even to look (e.g. a name too long)
        return str(exc.strerror or exc)


def _problem(target: Path, directory: bool) -> str | None:
    if target.exists():
        if directory:
            return None if target.is_dir() else "it exists and is not a directory"
        if target.is_dir():
            return "it is a directory"
        return None if os.access(target, os.W_OK) else f"{target} is not writable"
    parent = target.parent
    if not directory:
        if not parent.exists():
            return f"the directory {parent} does not exist"
        if not parent.is_dir():
            return f"{parent} is not a directory"
        return None if os.access(parent, os.W_OK | os.X_OK) else f"the directory {parent} is not writable"
    while not parent.exists():  # a directory is created with its missing parents: the nearest existing one decides
        if parent == parent.parent:
            return f"no part of {target} exists"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"the directory {parent} is not writable"

"""Write docs/API.md, the API reference, from tfbridge's docstrings.

    python scripts/gen_api_docs.py           # (re)write docs/API.md
    python scripts/gen_api_docs.py --check   # exit 1 with a message if docs/API.md is out of date

It imports tfbridge from this checkout's src/ and walks ``tfbridge.__all__`` in order. For each name it writes
the signature (for a class: the constructor, then its public methods and properties) and the docstring. The
output depends only on the code: no dates, no memory addresses.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "API.md"
PACKAGE = "tfbridge"
ALIAS = "tb"
_WRAP_AT_CHARS = 100  # a signature longer than this is written one parameter per line
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ROLE = re.compile(r":(?:func|class|meth|attr|exc|mod|data|obj):`~?([^`]+)`")
_DOUBLE_BACKTICKS = re.compile(r"``(.+?)``")

HEADER = f"""# API reference

Generated from the docstrings by `scripts/gen_api_docs.py`; do not edit by hand (run
`python scripts/gen_api_docs.py` after changing a docstring or a signature; `--check` tells whether this file is
up to date). Every name of `{PACKAGE}.__all__` is here, in that order; examples use `import {PACKAGE} as {ALIAS}`.
How the pieces fit together, with examples: [GUIDE.md](GUIDE.md).
"""


def load_package() -> ModuleType:
    """tfbridge from this checkout's src/ (not another installed copy)."""
    sys.path.insert(0, str(ROOT / "src"))
    return importlib.import_module(PACKAGE)


# ---- signatures ------------------------------------------------------------------------------------------


def _annotation(annotation: object) -> str:
    """An annotation as written in the source (modules use ``from __future__ import annotations``)."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _default(value: object) -> str:
    return _ADDRESS.sub("", repr(value))


def _parameter(param: inspect.Parameter) -> str:
    text: str = param.name
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        text = "*" + text
    elif param.kind is inspect.Parameter.VAR_KEYWORD:
        text = "**" + text
    annotation = _annotation(param.annotation)
    if annotation:
        text += f": {annotation}"
    if param.default is not inspect.Parameter.empty:
        text += f" = {_default(param.default)}" if annotation else f"={_default(param.default)}"
    return text


def _parameters(signature: inspect.Signature) -> list[str]:
    """Parameter texts with the ``/`` and ``*`` markers where Python would need them."""
    parts: list[str] = []
    star_seen = False
    after_positional_only = False
    for param in signature.parameters.values():
        positional_only = param.kind is inspect.Parameter.POSITIONAL_ONLY
        if after_positional_only and not positional_only:
            parts.append("/")
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            star_seen = True
        if param.kind is inspect.Parameter.KEYWORD_ONLY and not star_seen:
            parts.append("*")
            star_seen = True
        parts.append(_parameter(param))
        after_positional_only = positional_only
    if after_positional_only:
        parts.append("/")
    return parts


def format_signature(name: str, signature: inspect.Signature) -> str:
    """``name(params) -> return``, one parameter per line when it would be long."""
    parts = _parameters(signature)
    returns = _annotation(signature.return_annotation)
    tail = f" -> {returns}" if returns else ""
    one_line = f"{name}({', '.join(parts)}){tail}"
    if len(one_line) <= _WRAP_AT_CHARS or not parts:
        return one_line
    body = "".join(f"    {part},\n" for part in parts)
    return f"{name}(\n{body}){tail}"


def _signature(obj: object) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # builtins without a signature (e.g. Exception's constructor)
        return None


def _without_self(signature: inspect.Signature) -> inspect.Signature:
    params = list(signature.parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return signature.replace(parameters=params)


# ---- docstrings --------------------------------------------------------------------------------------------


def docstring(obj: object) -> str:
    """The object's own docstring, cleaned, with reST markup turned into Markdown code spans."""
    doc = obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)
    if isinstance(obj, type):
        doc = inspect.cleandoc(doc) if doc else None
    if not doc:
        return "*(no docstring)*"
    return _DOUBLE_BACKTICKS.sub(r"`\1`", _ROLE.sub(r"`\1`", doc))


# ---- one entry per name --------------------------------------------------------------------------------------


def _code(text: str) -> str:
    return f"```python\n{text}\n```"


def _members(cls: type) -> list[tuple[str, str, object]]:
    """(name, kind, object) of the public methods and properties the package defines for ``cls``, in source
    order, most derived class first; what comes from Python's own bases (e.g. Exception) is left out."""
    seen: set[str] = set()
    out: list[tuple[str, str, object]] = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, property):
                kind, obj = "property", value.fget
            elif hasattr(value, "func") and type(value).__name__ == "cached_property":
                kind, obj = "property", value.func
            elif isinstance(value, classmethod):
                kind, obj = "classmethod", value.__func__
            elif isinstance(value, staticmethod):
                kind, obj = "staticmethod", value.__func__
            elif inspect.isfunction(value):
                kind, obj = "method", value
            else:
                continue
            seen.add(name)
            out.append((name, kind, obj))
    return out


def _member_entry(owner: str, name: str, kind: str, obj: object) -> str:
    qualified = f"{owner}.{name}"
    signature = _signature(obj)
    if kind == "property":
        returns = _annotation(signature.return_annotation) if signature is not None else ""
        code = f"{qualified}: {returns}" if returns else qualified
    elif signature is None:
        code = f"{qualified}(...)"
    else:
        code = format_signature(qualified, signature if kind == "staticmethod" else _without_self(signature))
    label = "" if kind == "method" else f"*{kind}*\n\n"
    return f"### {qualified}\n\n{label}{_code(code)}\n\n{docstring(obj)}\n"


def _class_entry(public: str, cls: type) -> str:
    bases = ", ".join(f"`{base.__name__}`" for base in cls.__bases__ if base is not object)
    lines = [f"## {public}\n", f"*class*{f', subclass of {bases}' if bases else ''}\n"]
    own_init = any("__init__" in vars(klass) for klass in cls.__mro__ if klass.__module__.startswith(PACKAGE))
    signature = _signature(cls) if own_init else None
    if signature is not None:  # a constructor's "-> None" says nothing
        signature = signature.replace(return_annotation=inspect.Signature.empty)
        lines.append(_code(format_signature(f"{ALIAS}.{public}", signature)) + "\n")
    lines.append(docstring(cls) + "\n")
    lines.extend(_member_entry(public, name, kind, obj) for name, kind, obj in _members(cls))
    return "\n".join(lines)


def _function_entry(public: str, fn: object) -> str:
    signature = _signature(fn)
    code = format_signature(f"{ALIAS}.{public}", signature) if signature is not None else f"{ALIAS}.{public}(...)"
    return f"## {public}\n\n{_code(code)}\n\n{docstring(fn)}\n"


def _value_entry(public: str, value: object) -> str:
    return f"## {public}\n\n{_code(f'{ALIAS}.{public} = {_default(value)}')}\n"


def render(package: ModuleType) -> str:
    """The whole of docs/API.md for ``package``."""
    names: list[str] = list(package.__all__)
    contents = "".join(f"- [`{ALIAS}.{name}`](#{name.lower()})\n" for name in names)
    entries: list[str] = []
    for name in names:
        obj = getattr(package, name)
        if isinstance(obj, type):
            entries.append(_class_entry(name, obj))
        elif callable(obj):
            entries.append(_function_entry(name, obj))
        else:
            entries.append(_value_entry(name, obj))
    return HEADER + "\n" + contents + "\n" + "\n".join(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/API.md from tfbridge's docstrings.")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/API.md is not what would be written")
    args = parser.parse_args(argv)
    text = render(load_package())
    relative = API_MD.relative_to(ROOT)
    if args.check:
        current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else None
        if current != text:
            state = "missing" if current is None else "out of date with the docstrings"
            print(
                f"{relative} is {state}.\nHint: run python scripts/gen_api_docs.py and commit the result.",
                file=sys.stderr,
            )
            return 1
        print(f"{relative} is up to date.")
        return 0
    API_MD.parent.mkdir(parents=True, exist_ok=True)
    API_MD.write_text(text, encoding="utf-8")
    print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

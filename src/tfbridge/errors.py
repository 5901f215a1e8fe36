"""The tfbridge exception tree.

Every error tfbridge raises on purpose is a :class:`TfBridgeError`. Messages say what is wrong, where
(element index and field path), what was expected and received (long values cut short), and end with a
``Hint:`` line saying what to do.
"""

from __future__ import annotations

from typing import Any

_REPR_LIMIT_CHARS = 120


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


class TfBridgeError(Exception):
    """Base class of every error tfbridge raises."""


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise TfBridgeError unless ``value`` is an int (not a bool) >= ``minimum`` (or None when optional)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        msg = f"{name} must be a {kind} int{' or None' if optional else ''}. Received: {short(value)}"
        raise TfBridgeError(msg)


class TfBridgeWarning(UserWarning):
    """Warnings tfbridge gives (e.g. a one-shot iterator that can only give one epoch)."""


class SpecInferenceError(TfBridgeError):
    """Samples of a source disagree in structure, rank or dtype, or the source is empty."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SpecMismatchError(TfBridgeError):
    """An element does not fit the spec.

    Attributes: ``index`` (element or batch index, None when unknown), ``path`` (field path such as
    ``x['tokens']``), ``expected`` and ``got`` (short descriptions).
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        path: str = "",
        expected: str = "",
        got: str = "",
    ) -> None:
        super().__init__(message)
        self.index = index
        self.path = path
        self.expected = expected
        self.got = got

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


class SourceError(TfBridgeError):
    """User code raised while producing element ``index``; ``traceback`` holds the original traceback text."""

    def __init__(self, message: str, *, index: int | None = None, traceback: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


class ElementTimeoutError(SourceError):
    """Element ``index`` was not ready within ``to_dataset(timeout=...)`` seconds (a hung source or worker)."""

    def __init__(self, message: str, *, index: int | None = None, timeout: float | None = None) -> None:
        super().__init__(message, index=index)
        self.timeout = timeout


class WorkerDiedError(TfBridgeError):
    """A worker process or node died (signal, out of memory) while producing element ``index``."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> TfBridgeError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err

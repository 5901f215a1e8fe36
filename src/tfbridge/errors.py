"""The tfbridge exception tree.

Every error tfbridge raises on purpose is a :class:`TfBridgeError`. Plain exceptions: they pickle with their
attributes (from worker processes too) without help. Messages say what is wrong, where
(element index and field path), what was expected and received (long values cut short), and end with a
``Hint:`` line saying what to do.
"""

from __future__ import annotations


class TfBridgeError(Exception):
    """Base class of every error tfbridge raises."""


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
    ``x['tokens']``), ``expected`` and ``got`` (short descriptions). ``problems``: from ``tb.validate``, every
    mismatch it found (up to its ``max_problems``), the first of which the other attributes describe.
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        path: str = "",
        expected: str = "",
        got: str = "",
        problems: tuple[SpecMismatchError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.index = index
        self.path = path
        self.expected = expected
        self.got = got
        self._problems = problems

    @property
    def problems(self) -> tuple[SpecMismatchError, ...]:
        return self._problems or (self,)


class NonFiniteError(SpecMismatchError):
    """A float field holds NaN or Inf where finite values were asked for (``finite=True``)."""


class SourceError(TfBridgeError):
    """User code raised while producing element ``index``; ``traceback`` holds the original traceback text."""

    def __init__(self, message: str, *, index: int | None = None, traceback: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.traceback = traceback


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

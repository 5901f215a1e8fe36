"""Waiting for one element at most ``timeout`` seconds: the error that names it, and a bounded call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def timeout_error(index: int | None, timeout: float, where: str) -> Exception:
    """The error for an element that was not ready in time; ``where`` says what was left waiting."""
    from tfbridge.errors import ElementTimeoutError

    msg = (
        f"element {index} was not ready within timeout={timeout:g} s: {where}.\n"
        "Hint: look for a hang in the source at that element (a lock, a network read without timeout, an "
        "endless loop), or raise timeout= if elements can really take this long."
    )
    return ElementTimeoutError(msg, index=index, timeout=timeout)


def call_within(fn: Callable[[], Any], timeout: float, index: int | None, where: str) -> Any:
    """``fn()`` run in a daemon thread, waited for at most ``timeout`` seconds.

    A call that does not return in time cannot be stopped (Python threads cannot be killed): it is left to end
    by itself in its daemon thread, which never keeps the interpreter from exiting.
    """
    import threading

    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        done.set()

    threading.Thread(target=run, daemon=True, name="tfbridge-timeout").start()
    if not done.wait(timeout):
        raise timeout_error(index, timeout, where)
    if "error" in box:
        raise box["error"]
    return box["value"]

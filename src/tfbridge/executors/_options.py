"""ExecutorOptions: who runs a Python source's elements, as one small frozen value every entry point takes."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, replace
from typing import Any, Literal

from tfbridge._checks import check_choice, check_int, check_seconds, short
from tfbridge.errors import TfBridgeError

ExecutorName = Literal["serial", "thread", "process", "ray", "auto"]
EXECUTOR_NAMES: tuple[ExecutorName, ...] = ("serial", "thread", "process", "ray", "auto")


@dataclass(frozen=True)
class ExecutorOptions:
    """Who produces the elements of a Python source, and how.

    ``name``: "auto" (chosen from what the peek measured; never Ray), "serial", "thread", "process" or "ray".
    ``workers``: threads, processes or Ray tasks in flight (None: chosen for the machine).
    ``timeout``: seconds any one element may take before it becomes ``ElementTimeoutError`` (None: no limit).
    ``ray_address``: the Ray cluster ``name="ray"`` connects to (None: Ray already running in this process,
    RAY_ADDRESS, or a new local instance).
    ``max_elements_per_worker`` / ``max_worker_rss`` (``name="process"`` only): a worker process that was handed
    that many elements, or whose resident memory of its own (not counting shared memory or mapped files) is above
    that many bytes after an element, is replaced by a fresh one between elements (no element lost, repeated or
    reordered): for sources that leak memory.

    Every entry point that runs a Python source takes ``executor=`` as this value or as its name alone, and
    ``workers=`` as a shorthand.
    """

    name: ExecutorName = "auto"
    _: KW_ONLY
    workers: int | None = None
    timeout: float | None = None
    ray_address: str | None = None
    max_elements_per_worker: int | None = None
    max_worker_rss: int | None = None

    def __post_init__(self) -> None:
        check_choice("executor", self.name, EXECUTOR_NAMES)
        check_int("workers", self.workers, optional=True)
        check_seconds("timeout", self.timeout)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            msg = f"ray_address must be a non-empty string or None. Received: {short(self.ray_address)}"
            raise TfBridgeError(msg)
        if self.ray_address is not None and self.name != "ray":  # "auto" never chooses Ray
            msg = (
                f"ray_address is for executor='ray', but the executor is {self.name!r}.\n"
                "Hint: pass executor='ray' with ray_address=, or leave ray_address out."
            )
            raise TfBridgeError(msg)
        check_int("max_elements_per_worker", self.max_elements_per_worker, optional=True)
        rss = self.max_worker_rss
        if rss is not None and (not isinstance(rss, int) or isinstance(rss, bool) or rss < MIN_WORKER_RSS):
            msg = (
                f"max_worker_rss must be an int number of bytes of at least {MIN_WORKER_RSS:,} (16 MiB: less "
                f"than any Python interpreter), or None. Received: {short(rss)}\n"
                "Hint: it counts bytes, e.g. max_worker_rss=2 * 2**30 for 2 GiB."
            )
            raise TfBridgeError(msg)
        for field in ("max_elements_per_worker", "max_worker_rss"):
            if getattr(self, field) is not None and self.name != "process":
                msg = (
                    f"{field} is for executor='process' (it replaces worker processes), but the executor is "
                    f"{self.name!r}"
                    + (" (which may choose threads, which share this process's memory)" if self.name == "auto" else "")
                    + ".\nHint: pass executor='process' with it, or leave it out."
                )
                raise TfBridgeError(msg)


MIN_WORKER_RSS = 16 * 2**20


def resolve(
    executor: Any = "auto",
    *,
    workers: int | None = None,
    timeout: float | None = None,
    ray_address: str | None = None,
) -> ExecutorOptions:
    """One ExecutorOptions from an entry point's ``executor=`` (a name or options) and its shorthands.

    A shorthand may add to the options value but not contradict it.
    """
    if isinstance(executor, ExecutorOptions):
        given = {"workers": workers, "timeout": timeout, "ray_address": ray_address}
        updates: dict[str, Any] = {}
        for key, value in given.items():
            if value is None:
                continue
            current = getattr(executor, key)
            if current is not None and current != value:
                msg = (
                    f"{key}={short(value)} contradicts the executor options' {key}={short(current)}.\n"
                    f"Hint: give {key} in one place only."
                )
                raise TfBridgeError(msg)
            updates[key] = value
        return replace(executor, **updates) if updates else executor
    if not isinstance(executor, str):
        msg = (
            "executor must be one of 'auto', 'serial', 'thread', 'process', 'ray' or a tb.ExecutorOptions. "
            f"Received: {short(executor)}"
        )
        raise TfBridgeError(msg)
    check_choice("executor", executor, EXECUTOR_NAMES)
    return ExecutorOptions(executor, workers=workers, timeout=timeout, ray_address=ray_address)  # type: ignore[arg-type]

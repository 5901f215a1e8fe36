"""The one progress display, on stderr: a line redrawn in place on a terminal, plain lines now and then elsewhere.

Redrawing (carriage returns) is only for a terminal; when stderr is a file or a pipe (a log, CI) the progress is
a line every ``_LOG_EVERY_S`` seconds and a last line, with no control characters at all.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_LOG_EVERY_S = 10.0  # between plain lines when stderr is not a terminal
_REDRAW_EVERY_S = 0.1  # between redraws on a terminal
_BAR_WIDTH = 24


class Progress:
    """Progress over ``total`` (None: unknown) ``unit``s; ``rate_note`` says what the time per unit includes."""

    def __init__(self, total: int | None, unit: str, *, rate_note: str = "", stream: TextIO | None = None) -> None:
        self.total = total if total is not None and total > 0 else None
        self.unit, self.rate_note = unit, rate_note
        self.stream = sys.stderr if stream is None else stream
        self.redraw = _is_terminal(self.stream)
        self.start = time.monotonic()
        self.last_shown = self.start
        self.width = 0  # of the line on screen (a terminal), to blank out a longer previous one
        self.finished = False

    def update(self, current: int, finalize: bool | None = None) -> None:
        """``current`` units done; the last update (``finalize``, or reaching a known total) ends the line."""
        if self.finished:
            return
        last = finalize if finalize is not None else (self.total is not None and current >= self.total)
        now = time.monotonic()
        if not last and now - self.last_shown < (_REDRAW_EVERY_S if self.redraw else _LOG_EVERY_S):
            return
        self.last_shown = now
        line = self.line(current, now - self.start, last)
        if self.redraw:
            self.stream.write("\r" + line.ljust(self.width) + ("\n" if last else ""))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.finished = last

    def line(self, current: int, elapsed: float, last: bool) -> str:
        units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
        if self.total is not None:
            done = min(current / self.total, 1.0)
            filled = int(done * _BAR_WIDTH)
            bar = f"[{'=' * filled}{' ' * (_BAR_WIDTH - filled)}] " if self.redraw else ""
            text = f"{bar}{current}/{self.total} {units} ({done:.0%})"
        else:
            text = f"{current} {units}"
        text += f" in {_duration(elapsed)}"
        if current > 0:
            note = f" {self.rate_note}" if self.rate_note else ""
            text += f", {_per_unit(elapsed / current)}/{self.unit}{note}"
            if not last and self.total is not None and current < self.total:
                text += f", about {_duration(elapsed / current * (self.total - current))} left"
        return text


def progress_bar(verbose: bool | None, total: int | None, unit: str, *, rate_note: str = "") -> Progress | None:
    """A :class:`Progress` over ``total`` (None or negative: unknown) ``unit``s, or None when not shown
    (``verbose`` None: shown when stderr is a terminal)."""
    return Progress(total, unit, rate_note=rate_note) if shown(verbose) else None


def shown(verbose: bool | None) -> bool:
    """Whether progress and notes are shown: as ``verbose`` says, or (None) when stderr is a terminal."""
    return _is_terminal(sys.stderr) if verbose is None else verbose


def note(verbose: bool | None, text: str) -> None:
    """One line on stderr when progress is shown (``verbose`` as for :func:`progress_bar`)."""
    if shown(verbose):
        print(f"tfbridge: {text}", file=sys.stderr, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _per_unit(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"

"""Progress of long work (a first sync, an import): messages done, rate, time left.

On a terminal it is one line rewritten in place; written to a file or a pipe, a plain
line now and then; in the daemon's log, one line a minute. Work of fewer than
`SHOWN_FROM` messages says nothing: a poll of a few new messages stays quiet.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

SHOWN_FROM = 2000  # messages
TERMINAL_INTERVAL = 0.5  # seconds between rewrites of the line on a terminal
PLAIN_INTERVAL = 30.0  # seconds between lines written to a file or a pipe
LOG_INTERVAL = 60.0  # seconds between lines in the daemon's log
# The rate and the time left are noise before this much work has been timed.
SETTLED = 1.0  # seconds


@dataclass(frozen=True)
class Progress:
    """Where progress lines go, and how often. `write(line, final)`: `final` ends a task."""

    write: Callable[[str, bool], None]
    interval: float
    clock: Callable[[], float] = time.monotonic
    shown_from: int = SHOWN_FROM

    def task(self, label: str, total: int | None = None) -> Task:
        """Start counting one piece of work of `total` messages (None: not known ahead)."""
        return Task(self, label, total)


class Task:
    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.started = progress.clock()
        self.done = 0
        self.fraction: float | None = None
        self.shown_at: float | None = None  # when a line was last written

    def update(self, done: int, fraction: float | None = None) -> None:
        """`done` messages so far; `fraction` of the work done when `total` is not known
        (an import reads files: the share of their bytes read)."""
        self.done = done
        self.fraction = fraction
        if self.done < self.progress.shown_from and (self.total or 0) < self.progress.shown_from:
            return
        now = self.progress.clock()
        if self.shown_at is None or now - self.shown_at >= self.progress.interval:
            self.shown_at = now
            self.progress.write(self.line(now), False)

    def finish(self) -> None:
        """The last line, for a task that showed any."""
        if self.shown_at is not None:
            elapsed = self.progress.clock() - self.started
            rate = f", {self.done / elapsed:,.0f}/s" if elapsed >= SETTLED else ""
            took = short_duration(elapsed)
            self.progress.write(f"{self.label}: {self.done:,} messages in {took}{rate}", True)

    def line(self, now: float) -> str:
        share = self.done / self.total if self.total else self.fraction
        counted = f"{self.done:,} of {self.total:,}" if self.total else f"{self.done:,}"
        parts = [f"{self.label}: {counted} messages"]
        if share is not None:
            parts[0] += f" ({min(share, 1.0):.0%})"
        elapsed = now - self.started
        if elapsed >= SETTLED and self.done:
            parts.append(f"{self.done / elapsed:,.0f}/s")
            if share is not None and 0 < share < 1:
                parts.append(f"about {short_duration(elapsed * (1 - share) / share)} left")
        return ", ".join(parts)


def terminal_progress(stream: TextIO | None = None) -> Progress:
    """Progress on the standard error: rewritten in place on a terminal, else plain lines."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        return Progress(lambda line, _final: print(line, file=out, flush=True), PLAIN_INTERVAL)

    def rewrite(line: str, final: bool) -> None:
        # \r back to the start of the line, ESC[K erases what a longer line left
        out.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
        out.flush()

    return Progress(rewrite, TERMINAL_INTERVAL)


def log_progress(logger: logging.Logger) -> Progress:
    """Progress as one log line a minute (the daemon)."""
    return Progress(lambda line, _final: logger.info("%s", line), LOG_INTERVAL)


def short_duration(seconds: float) -> str:
    """ "45s", "3m 20s", "2h 5m": a wait measured in seconds (reports round to minutes)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"

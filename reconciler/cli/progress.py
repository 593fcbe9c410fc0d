"""Showing progress of long actions: a rich progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("reconciler")


class ProgressReporter:
    """``reporter(label, done, total)``: called as often as the work likes; it throttles itself."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 10.0):
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self._last_logged: dict[str, float] = {}
        self._last_counts: dict[str, tuple[int, int]] = {}
        self._bar: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if self.stream.isatty():  # rich is loaded only for a terminal (it costs start-up time otherwise)
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=True,
            )

    def __call__(self, label: str, done: int, total: int) -> None:
        if self._bar is not None:
            if label not in self._tasks:
                if not self._tasks:
                    self._bar.start()
                self._tasks[label] = self._bar.add_task(label, total=total)
            self._bar.update(self._tasks[label], completed=done, total=total)
            if done >= total:
                self._bar.remove_task(self._tasks.pop(label))
                if not self._tasks:
                    self._bar.stop()
            return
        now = time.monotonic()
        last = self._last_logged.get(label)
        if done == 0 or self._last_counts.get(label) == (done, total):
            return  # nothing done yet (the action's start is logged already), or said already
        if done < total and last is not None and now - last < self.log_every:
            return
        self._last_logged[label] = now
        self._last_counts[label] = (done, total)
        log.info("%s: %s of %s files", label, f"{done:,}", f"{total:,}")

    def close(self) -> None:
        """Stop a bar still showing (its task never reached its total)."""
        if self._bar is not None and self._tasks:
            self._bar.stop()
            self._tasks.clear()

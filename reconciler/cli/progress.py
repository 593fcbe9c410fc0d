"""Showing progress of long work: rich progress bars and spinners on a terminal, log lines otherwise.

``reporter(label, done, total)`` with ``total >= 0`` is work of known size (a copy of N files):
a bar with percent, files (thousands separated), the rate and the time left. ``total < 0`` is
work of unknown size (an origin being scanned): a spinner with the files counted so far and the
rate; the work ends with a call whose ``total`` equals ``done``. ``bytes_done``/``bytes_total``
add bytes and a byte rate. Without a terminal, the same figures are logged now and then.

While a bar or spinner is shown, rich redirects ``sys.stderr`` so that whatever is written
there (log lines, errors: the CLI's log handler writes to the current ``sys.stderr``) is printed
above the display, never drawn over.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from reconciler.units import human_bytes

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("reconciler")


def figures(done: int, total: int, seconds: float, bytes_done: int | None = None,
            bytes_total: int | None = None) -> str:
    """The figures of one piece of work as one line: ``1,204 of 5,000 files (24%), 1.2 GiB of
    5.6 GiB, 40.0 MiB/s`` or, of unknown size, ``12,345 files scanned, 4,115 files/s``; after
    ``seconds`` of work (the percent and the rate appear once a second has passed)."""
    if total < 0:
        text = f"{done:,} {'file' if done == 1 else 'files'} scanned"
    else:  # the percent and rates once a second has passed (short work needs neither)
        percent = f" ({100 * done // total}%)" if total and seconds >= 1 else ""
        text = f"{done:,} of {total:,} {'file' if total == 1 else 'files'}{percent}"
    if bytes_done is not None:
        text += f", {human_bytes(bytes_done)}" + (f" of {human_bytes(bytes_total)}" if bytes_total is not None else "")
    if seconds >= 1 and done:
        text += (f", {human_bytes(int(bytes_done / seconds))}/s" if bytes_done
                 else f", {done / seconds:,.0f} files/s")
    return text


class ProgressReporter:
    """``reporter(label, done, total, bytes_done=None, bytes_total=None)``: called as often as the
    work likes; it throttles itself. See the module docstring."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 10.0):
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self._last_logged: dict[str, float] = {}
        self._last_counts: dict[str, tuple[int, int]] = {}
        self._started: dict[str, float] = {}
        self._scans: set[str] = set()  # labels of work of unknown size under way
        self._bar: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if self.stream.isatty():  # rich is loaded only for a terminal (it costs start-up time otherwise)
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.fields[figures]}"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=True, redirect_stderr=True, redirect_stdout=False,
            )

    def __call__(self, label: str, done: int, total: int, bytes_done: int | None = None,
                 bytes_total: int | None = None) -> None:
        now = time.monotonic()
        started = self._started.setdefault(label, now)
        finished = total >= 0 and done >= total
        text = figures(done, total, now - started, bytes_done, bytes_total)
        if self._bar is not None:
            known = None if total < 0 else total
            if label not in self._tasks:
                if not self._tasks:
                    self._bar.start()
                self._tasks[label] = self._bar.add_task(label, total=known, figures=text)
            self._bar.update(self._tasks[label], completed=done, total=known, figures=text)
            if finished:
                self._bar.remove_task(self._tasks.pop(label))
                self._started.pop(label, None)
                if not self._tasks:
                    self._bar.stop()
            return
        last = self._last_logged.get(label)
        scan = total < 0 or label in self._scans
        if total < 0:
            self._scans.add(label)
        if finished:
            self._started.pop(label, None)
            self._scans.discard(label)
        if done == 0 or self._last_counts.get(label) == (done, total):
            return  # nothing done yet (the action's start is logged already), or said already
        if scan:  # work of unknown size: a line every log_every, and the end only after such lines
            if finished and self._last_logged.pop(label, None) is None:
                return
            if not finished and now - (last if last is not None else started) < self.log_every:
                return
        elif not finished and last is not None and now - last < self.log_every:
            return
        if not (scan and finished):
            self._last_logged[label] = now
        self._last_counts[label] = (done, total)
        log.info("%s: %s", label, text)

    def close(self) -> None:
        """Stop a bar still showing (its task never reached its total)."""
        if self._bar is not None and self._tasks:
            self._bar.stop()
            self._tasks.clear()

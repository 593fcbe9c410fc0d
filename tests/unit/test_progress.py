"""Progress of long actions: a bar on a terminal, throttled log lines otherwise."""

from __future__ import annotations

import io
import logging
import os
import pty
import time

from reconciler.cli.progress import ProgressReporter


def test_a_terminal_gets_a_progress_bar():
    pid, fd = pty.fork()
    if pid == 0:  # the child writes to a real pseudo-terminal
        os.environ["TERM"] = "xterm"
        reporter = ProgressReporter(stream=os.fdopen(1, "w"))  # fd 1 is the pty (sys.stdout is pytest's)
        for done in (0, 400, 800, 1000):
            reporter("copy replica:/mnt/backup from exao1", done, 1000)
            time.sleep(0.25)
        os._exit(0 if reporter._bar is not None else 3)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"copy replica:/mnt/backup from exao1" in output
    assert b"of 1,000 files" in output and "━".encode() in output  # thousands separated


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_without_a_terminal_progress_is_logged_now_and_then():
    reporter = ProgressReporter(stream=io.StringIO(), log_every=3600)
    logger = logging.getLogger("reconciler")
    collect = _Collect()
    logger.addHandler(collect)  # on the logger itself: the CLI may have turned propagation off
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for done in range(0, 1001, 100):
            reporter("copy replica:/mnt/backup from exao1", done, 1000)
        reporter("copy replica:/mnt/backup from exao1", 1000, 1000)  # told the end twice: said once
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    # the first call with something done, then the end; never "0 of …" (the action's start is
    # logged already) and never the same line twice
    assert collect.messages == ["copy replica:/mnt/backup from exao1: 100 of 1,000 files",
                                "copy replica:/mnt/backup from exao1: 1,000 of 1,000 files"]


def test_figures_have_separators_percent_rates_and_bytes():
    from reconciler.cli.progress import figures

    assert figures(100, 1000, 0.2) == "100 of 1,000 files"  # short work: the count alone
    assert figures(1204, 5000, 10) == "1,204 of 5,000 files (24%), 120 files/s"
    assert figures(1, 1, 0) == "1 of 1 file"
    assert figures(1204, 5000, 2, 3 * 2 ** 30, 6 * 2 ** 30) == \
        "1,204 of 5,000 files (24%), 3.0 GiB of 6.0 GiB, 1.5 GiB/s"
    assert figures(12345, -1, 3) == "12,345 files scanned, 4,115 files/s"
    assert figures(1, -1, 0) == "1 file scanned"


def _logged(reporter_calls, log_every):
    reporter = ProgressReporter(stream=io.StringIO(), log_every=log_every)
    logger = logging.getLogger("reconciler")
    collect = _Collect()
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for call in reporter_calls:
            reporter(*call)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return collect.messages


def test_without_a_terminal_a_scan_is_logged_only_when_it_lasts():
    scan = [("scan origin:exao1", done, -1) for done in (1000, 2000, 3000)] + [("scan origin:exao1", 3210, 3210)]
    assert _logged(scan, log_every=3600) == []  # a short scan says nothing
    lines = _logged(scan, log_every=0)
    assert lines[0] == "scan origin:exao1: 1,000 files scanned" and lines[-1].startswith(
        "scan origin:exao1: 3,210 of 3,210 files")
    assert len(lines) == len(set(lines)) == 4


def _screen(output: bytes) -> list[str]:
    """What a terminal shows after ``output``: text, CR/LF, cursor up/down, erase line (enough
    for rich's live display); other escape sequences (colours, cursor visibility) are ignored."""
    import re

    lines: list[list[str]] = [[]]
    row = column = 0
    for token in re.findall(rb"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", output):
        if token == b"\r":
            column = 0
        elif token == b"\n":
            row += 1
            while len(lines) <= row:
                lines.append([])
        elif token.startswith(b"\x1b["):
            final, argument = token[-1:], token[2:-1].decode()
            count = int(argument) if argument.isdigit() else 1
            if final == b"A":
                row = max(row - count, 0)
            elif final == b"B":
                row += count
                while len(lines) <= row:
                    lines.append([])
            elif final == b"K":
                lines[row] = lines[row][:column] if argument in ("", "0") else []
        else:
            text = lines[row]
            text.extend(" " * (column - len(text)))
            character = token.decode("utf-8", "replace")
            if column < len(text):
                text[column] = character
            else:
                text.append(character)
            column += 1
    return ["".join(line).rstrip() for line in lines]


def _in_a_terminal(work) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:
        try:
            import sys

            os.environ["TERM"] = "xterm"
            sys.stderr = os.fdopen(2, "w", buffering=1)  # fd 2 is the pty (sys.stderr was pytest's)
            work()
        finally:
            os._exit(0)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    return output


def test_a_terminal_shows_a_spinner_with_the_files_scanned():
    def work():
        import sys

        reporter = ProgressReporter(stream=sys.stderr)
        for done in (1000, 12000, 25000):
            reporter("scan origin:exao1", done, -1)
            time.sleep(0.3)
        reporter("scan origin:exao1", 25210, 25210)

    output = _in_a_terminal(work)
    assert b"scan origin:exao1" in output and b"12,000 files scanned" in output


def test_an_error_logged_while_a_bar_is_shown_is_never_drawn_over():
    def work():
        import sys

        from reconciler.cli.app import setup_logging

        reporter = ProgressReporter(stream=sys.stderr)
        setup_logging(0, timestamps=False)  # what the CLI does: log lines to stderr
        for done in (0, 300):
            reporter("copy replica:/mnt/backup from exao1", done, 1000)
            time.sleep(0.2)
        logging.getLogger("reconciler").error("replica:/mnt/backup: the disk is gone")
        for done in (600, 900):
            reporter("copy replica:/mnt/backup from exao1", done, 1000)
            time.sleep(0.2)
        reporter.close()

    screen = _screen(_in_a_terminal(work))
    assert "ERROR: replica:/mnt/backup: the disk is gone" in screen  # a whole line of its own, still there

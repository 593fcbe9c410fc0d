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
    assert b"/1000" in output and "━".encode() in output


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

"""How reconciler's timestamped log lines look (apply, reconcile): shared by the logging
set-up and by the no-change memo's replay, which writes its one line before logging is loaded."""

from __future__ import annotations

import time

TIMESTAMPED = "%(asctime)s %(levelname)s %(message)s"
PLAIN = "%(levelname)s: %(message)s"
DATE = "%Y-%m-%dT%H:%M:%S%z"


def line(level: str, message: str) -> str:
    """One timestamped line, as the logging set-up would format it now."""
    return f"{time.strftime(DATE)} {level} {message}"

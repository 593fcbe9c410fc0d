"""One measured process for the benchmarks: wall seconds, CPU seconds and peak RSS (wait4).

The benchmark scripts import nothing of reconciler themselves: a child's peak RSS
includes the parent's image at fork time, which would inflate every figure, the
peer's too. Children find this checkout's reconciler through PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # seconds, user + system
    rss_kib: int  # peak resident set
    code: int  # exit code


def run(argv: list[str], ok: tuple[int, ...] = (0,)) -> Measured:
    """Run ``argv`` (stdout discarded) and measure it. Exits the benchmark, with the
    child's stderr, when its exit code is not in ``ok``."""
    # stderr goes to a file, not a pipe: nothing reads a pipe during wait4, so a child that
    # wrote more than the pipe holds (64 KiB) would block for ever.
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        stderr.seek(0)
        error = stderr.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise SystemExit(f"failed with exit {code}: {' '.join(argv)[:2000]}\n{error[-2000:]}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code)

"""One measured process for the benchmarks: wall seconds, CPU seconds and peak RSS (wait4).

The benchmark scripts import nothing of reconciler themselves: a child's peak RSS
includes the parent's image at fork time, which would inflate every figure, the
peer's too. Children find this checkout's reconciler through PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
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
    start = time.perf_counter()
    process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"failed with exit {code}: {' '.join(argv)[:2000]}\n{error[-2000:]}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code)

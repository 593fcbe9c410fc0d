#!/usr/bin/env python3
"""Start-up: how long reconciler takes for the commands that do little, beside Python itself.

    python benchmarks/startup.py [--repeat 7]

Runs, interleaved, ``python -c pass`` (the floor), ``reconciler --version``, ``reconciler --help``,
``reconciler validate`` and ``reconciler plan`` of a config that declares nothing, and importing
the dump path (``reconciler.kinds.backups.dump``, what a backup process loads before pymongo does
its work), each as a whole process (the installed console script's interpreter, modules
byte-compiled first), and prints the medians and their ratio to the floor. Targets (issue: fast
start): --help and --version at most 0.2 s on this machine, importing the dump path at most 0.15 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"--version": 0.2, "--help": 0.2, "import the dump path": 0.15}


def timed(argv: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    arguments = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "reconciler")], check=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "reconciler.toml").write_text("# nothing declared\n")
        program = [sys.executable, "-m", "reconciler"]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--version": [*program, "--version"],
            "--help": [*program, "--help"],
            "validate": [*program, "validate"],
            "plan (empty config)": [*program, "plan"],
            "import the dump path": [sys.executable, "-c", "import reconciler.kinds.backups.dump"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(arguments.repeat):
            for name, argv in cases.items():
                times[name].append(timed(argv, work))
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':<22}{'median':>10}{'ratio to python':>18}{'target':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        limit = TARGETS.get(name)
        target = f"≤ {limit} s" if limit else ""
        verdict = (" met" if median <= limit else " NOT met") if limit else ""
        print(f"{name:<22}{median:>9.3f}s{median / floor:>18.1f}{target:>10}{verdict}")


if __name__ == "__main__":
    main()

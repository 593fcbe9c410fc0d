#!/usr/bin/env python3
"""Retention on 10,000 backups (target: < 1 s), beside restic's rules transcribed plainly.

    python benchmarks/retention.py [--backups 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.kinds.backups.retention import decide, parse_policy  # noqa: E402
from tests.unit.backups.test_retention import reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=10_000)
    arguments = parser.parse_args()
    start = datetime(2000, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=7 * index) for index in range(arguments.backups)]
    policy = parse_policy("keep_last=3,keep_daily=7,keep_weekly=4,keep_monthly=12,keep_yearly=2,keep_within=2d")
    began = time.perf_counter()
    decision = decide(times, policy)
    ours = time.perf_counter() - began
    began = time.perf_counter()
    expected = reference(times, policy)
    theirs = time.perf_counter() - began
    assert [index for index, _ in decision.keep] == [index for index, keep in expected if keep]
    print(f"{arguments.backups:,} backups: reconciler {ours * 1000:.1f} ms, restic's loop transcribed "
          f"{theirs * 1000:.1f} ms, ratio {ours / theirs:.2f}; kept {len(decision.keep)}, "
          f"removed {len(decision.remove)}"
          f"; target < 1 s: {'met' if ours < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()

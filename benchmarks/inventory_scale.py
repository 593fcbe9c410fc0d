#!/usr/bin/env python3
"""Inventory scale on PostgreSQL: a state holding millions of inventory rows (generated in the
server with generate_series, not files), and what reconciler's read-mostly commands cost there.

    python benchmarks/inventory_scale.py                       # 10,000,000 rows, 200,000 files
    python benchmarks/inventory_scale.py --rows 2000000        # smaller, for a small machine
    python benchmarks/inventory_scale.py --pg postgresql://postgres@db.example/postgres

The state is a fresh database on the server. Its config has two origins and two replicas:
``bulk``, an origin on another host (local_only, so this host never reads it) whose --rows
files and their copies on the ``bulk`` replica are generated in the server; and ``small``,
--files real files (under --dir, /dev/shm by default) copied to its replica by one reconcile
before anything is measured. Then, each the real CLI in its own process (start-up included),
with its wall time and peak RSS (the process's own, from wait4):

  1. ``replicas list``     both replicas: copies held, files missing (a join over every row)
  2. ``inventory stats``   every origin: files, bytes, gone, enrolled, trimmed (a scan of every row)
  3. ``plan --target replica:<small>`` with nothing to do: the 200,000-file origin listed
     and folded into the inventory, its replica's candidates computed, beside --rows others

The target is a peak RSS of at most 400 MiB for each. Prints one table (markdown) and the
time it took to generate the rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MIB = 400


def run_measured(args: list[str], env: dict[str, str]) -> tuple[int, float, float, str]:
    """As ``run``, reaping the child ourselves so that its own peak RSS is known."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, "-m", "reconciler", *args], stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode not in (0, 2):
        sys.stderr.write(errors)
    return process.returncode, seconds, usage.ru_maxrss / 1024, text


def make_files(root: Path, files: int, per_dir: int = 1000) -> None:
    stamp = time.time() - 3600
    for index in range(files):
        directory = root / f"d{index // per_dir:04d}"
        if index % per_dir == 0:
            directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{index:07d}.bin"
        path.write_bytes(b"x" * (index % 64))
        os.utime(path, (stamp, stamp))


def generate_rows(url: str, rows: int, replica: str) -> float:
    """Generate ``rows`` origin files of origin ``bulk`` and their copies on ``replica``, in the server."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO origin_files (origin, path, dir, size, mtime_ns, first_seen, last_seen, gone_since,
                                      from_replica)
            SELECT 'bulk', 'd' || lpad((g / 1000)::text, 5, '0') || '/f' || g || '.fits',
                   'd' || lpad((g / 1000)::text, 5, '0'), 1000 + g %% 50000, 1700000000000000000 + g,
                   now(), now(), CASE WHEN g %% 100 = 0 THEN now() END, false
            FROM generate_series(1, %s) AS g
            """, (rows,))
        connection.execute(
            """
            INSERT INTO replica_copies (replica, file_id, size, mtime_ns, copied_at, verified_at)
            SELECT %s, id, size, mtime_ns, now(), NULL FROM origin_files
            WHERE origin = 'bulk' AND id %% 10 <> 0
            """, (replica,))
        connection.execute("INSERT INTO origin_status (origin, last_scan, last_full_scan, generation) "
                           "VALUES ('bulk', now(), now(), 1) ON CONFLICT (origin) DO NOTHING")
        connection.execute("ANALYZE origin_files")
        connection.execute("ANALYZE replica_copies")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="generated inventory rows (default 10,000,000)")
    parser.add_argument("--files", type=int, default=200_000, help="real files of the planned origin")
    parser.add_argument("--pg", default=os.environ.get("RECONCILER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="a PostgreSQL URL that may create databases")
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the real files go (default /dev/shm)")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    options = parser.parse_args()

    import psycopg

    name = f"reconciler_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(options.pg, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = options.pg.rsplit("/", 1)[0]
    admin_url = f"{base}/{name}"
    state_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    work = Path(tempfile.mkdtemp(prefix="reconciler-scale-", dir=options.dir))
    try:
        (work / "small-replica").mkdir()
        (work / "bulk-replica").mkdir()
        print(f"making {options.files:,} files under {work} ...", file=sys.stderr)
        make_files(work / "small", options.files)
        config = work / "reconciler.toml"
        config.write_text("""\
[origins.small]
root = "small"
settle = "0s"

[origins.bulk]
root = "/data/bulk"
host = "another-instrument-host"
local_only = true

[replicas."small-replica"]
origins = ["small"]

[replicas."bulk-replica"]
origins = ["bulk"]
""")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("RECONCILER_PLUGINS", None)
        common = ["--config", str(config), "--state", state_url]
        target = ["--target", "replica:small-replica"]
        print("first reconcile of the small origin (copies it; not measured) ...", file=sys.stderr)
        code, seconds, rss, _out = run_measured([*common, "reconcile", *target], env)
        assert code == 0, "the first reconcile failed"
        print(f"  {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr)
        print(f"generating {options.rows:,} inventory rows in the server ...", file=sys.stderr)
        generated = generate_rows(admin_url, options.rows, "bulk-replica")
        print(f"  {generated:.1f} s", file=sys.stderr)

        figures = []
        for label, command in (
            ("replicas list", ["replicas", "list", "--json"]),
            ("inventory stats", ["inventory", "stats", "--json"]),
            (f"plan (no changes) of a {options.files:,}-file origin", ["plan", "--detailed-exitcode", *target]),
        ):
            code, seconds, rss, out = run_measured([*common, *command], env)
            assert code == 0, f"{label} exited {code}"
            figures.append((label, seconds, rss))
            print(f"  {label}: {seconds:.2f} s, {rss:.0f} MiB", file=sys.stderr)
        print(f"\n{options.rows:,} generated inventory rows (+ {options.rows * 9 // 10:,} replica copies), "
              f"{options.files:,} real files; rows generated in {generated:.0f} s\n")
        print("| command | wall time | peak RSS | target |")
        print("| --- | ---: | ---: | ---: |")
        for label, seconds, rss in figures:
            verdict = "met" if rss <= TARGET_MIB else "MISSED"
            print(f"| `{label}` | {seconds:.2f} s | {rss:.0f} MiB | ≤ {TARGET_MIB} MiB ({verdict}) |")
        return 0 if all(rss <= TARGET_MIB for _label, _seconds, rss in figures) else 1
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
            with psycopg.connect(options.pg, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Scrub benchmark: `reconciler inventory verify` (the real CLI) over a replica of many small
files, beside `sha256sum` of the same files, in one run; prints wall time and peak RSS.

    python benchmarks/scrub.py --dir /dev/shm --files 1000000 --dirs 1000   # the memory target
    python benchmarks/scrub.py --dir /dev/shm --files 100000 --dirs 100     # a quick look

An origin of --files files (0-200 bytes, real files; in memory with --dir /dev/shm: each takes
a page there, so a million files on both sides need about 8 GiB of it) with
checksum = "sha256" is copied to a local replica by `reconciler reconcile` (which hashes the
origin files and the copies: the inventory), then `reconciler inventory verify` re-reads and
hashes every copy and compares it with the origin's sha256. The peer is
`find REPLICA -type f -print0 | xargs -0 -P 2 sha256sum` (two processes, as the scrub hashes
two files at a time). Target (#22): the scrub's peak RSS <= 400 MiB at 1,000,000 files.
Each process is measured alone (wall seconds and peak RSS from wait4).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import REPO, run


def generate(root: Path, files: int, directories: int, seed: int = 1) -> int:
    """Files of 0-200 random-ish bytes in ``directories`` folders, an hour old; their bytes in all."""
    rng = random.Random(seed)
    pool = os.urandom(1 << 16)
    stamp = time.time() - 3600
    total = made = 0
    per_dir = max(1, files // directories)
    for index in range(directories):
        folder = root / f"telem/d{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_dir if index < directories - 1 else files - made):
            size = rng.randint(0, 200)
            start = rng.randint(0, len(pool) - size)
            path = os.path.join(folder, f"f{number:06d}.bin")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(descriptor, pool[start:start + size])
            os.close(descriptor)
            os.utime(path, (stamp, stamp))
            total += size
            made += 1
        os.utime(folder, (stamp, stamp))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where to work (default: the temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    arguments = parser.parse_args()
    if not shutil.which("sha256sum") or not shutil.which("rsync"):
        raise SystemExit("sha256sum (coreutils) and rsync are needed")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "reconciler")], check=True,
                   stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="reconciler-scrub-", dir=arguments.dir))
    try:
        started = time.perf_counter()
        total = generate(work / "src", arguments.files, arguments.dirs)
        made = time.perf_counter() - started
        (work / "replica").mkdir()
        config = work / "reconciler.toml"
        config.write_text(f'[state]\nurl = "sqlite:///{work}/state.db"\n\n'
                          f'[origins.src]\nroot = "{work}/src"\nsettle = "1m"\nimmutable = true\n'
                          'checksum = "sha256"\n\n'
                          f'[replicas."{work}/replica"]\n')
        reconciler = [sys.executable, "-m", "reconciler", "--config", str(config)]
        os.sync()
        first = run([*reconciler, "reconcile"])
        os.sync()
        scrub = run([*reconciler, "inventory", "verify"])
        os.sync()
        replica = shlex.quote(str(work / "replica" / "src"))
        peer = run(["sh", "-c", f"find {replica} -type f -print0 | xargs -0 -P 2 -n 50000 sha256sum > /dev/null"])
        print(f"{arguments.files:,} files ({total:,} bytes) in {arguments.dirs:,} directories under {work} "
              f"(made in {made:.1f} s)")
        print(f"{'':52}{'wall s':>9}{'peak RSS':>13}")
        for label, measured in (("reconciler reconcile (copy, hash origin and copies)", first),
                                ("reconciler inventory verify (the scrub)", scrub),
                                ("find | xargs -P 2 sha256sum (the same copies)", peer)):
            print(f"{label:52}{measured.wall:9.2f}{measured.rss_kib / 1024:9.0f} MiB")
        print(f"ratio scrub/sha256sum wall: {scrub.wall / peer.wall:.2f}; scrub peak RSS "
              f"{scrub.rss_kib / 1024:.0f} MiB (target <= 400 MiB at 1,000,000 files)")
    finally:
        if arguments.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

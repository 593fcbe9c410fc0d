#!/usr/bin/env python3
"""Replicas benchmark: reconciler and its peers (find, rsync) side by side, in one run.

    python benchmarks/replicas.py                 # 200,000 files in 200 directories, 0-2 KiB each
    python benchmarks/replicas.py --files 1000000 # the memory target
    python benchmarks/replicas.py --dir /dev/shm  # in memory: CPU work only, no disk noise
    python benchmarks/replicas.py --ssh           # also the origin over ssh (needs sshd installed)

Prints, for each measurement, reconciler's time, the peer's, and the ratio:
  1. first plan (scan + inventory)           vs  find ROOT -type f -printf '%P\\t%s\\t%T@\\n'
  2. plan, replica complete                  vs  rsync -an --stats src/ replica/
  2b. the same with immutable = true         vs  the same rsync: the first such plan after
      the apply, which reads the state and stats every directory (its fast path)
  2c. the same, repeated: replayed from the no-change memo the previous plan left, which
      checks every directory and the state's rows without loading the rest of reconciler
  3. apply of the whole tree to an empty replica vs rsync -a src/ dst/
  4. peak RSS of the first plan (target <= 400 MiB at 1,000,000 files)
  5. with --ssh, the origin read over ssh from an sshd on 127.0.0.1 that the benchmark
     starts: plan, replica complete (5b: immutable = true)  vs  rsync -an over the same ssh
and two floors: the interpreter starting and importing sqlmodel (the state store's
library) as reconciler's entry point does (collector off), which no plan that opens the
state through it can be faster than; and the interpreter starting at all, which no replay
can be faster than.
Each reconciler run is the real CLI in its own process (Python start-up included),
with reconciler's modules byte-compiled first, as `pip install` does (an editable
install under PYTHONDONTWRITEBYTECODE would otherwise recompile them on every run).
Every pair is run --repeat times (default 3; the plans and rsync -an 3 times more
per repetition), interleaved, each after os.sync(); medians are printed, then
every single figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import REPO, run

sys.path.insert(0, str(REPO))
from tests.integration import sshd as sshd_server  # noqa: E402  (standard library only)


def generate(root: Path, files: int, directories: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    total = 0
    stamp = time.time() - 3600
    per_dir = max(1, files // directories)
    made = 0
    for index in range(directories):
        folder = root / f"telem/d{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_dir if index < directories - 1 else files - made):
            size = rng.randint(0, 2048)
            path = folder / f"f{number:06d}.bin"
            with open(path, "wb") as stream:
                stream.write(b"\x5a" * size)
            os.utime(path, (stamp, stamp))
            total += size
            made += 1
        os.utime(folder, (stamp, stamp))
    return total


def config(work: Path, rep: int, immutable: bool) -> Path:
    """One repetition's config: its own state database and replica; immutable shares both."""
    path = work / f"{'immutable' if immutable else 'plain'}-{rep}.toml"
    path.write_text(
        f'[state]\nurl = "sqlite:///{work}/state-{rep}.db"\n\n'
        f'[origins.src]\nroot = "{work}/src"\nsettle = "1m"\nimmutable = {str(immutable).lower()}\n\n'
        f'[replicas."{work}/replica-{rep}"]\n'
    )
    return path


def ssh_config(work: Path, rep: int, immutable: bool, server: sshd_server.Sshd) -> Path:
    """The origin over ssh, into the replica the local runs completed: enrolled, not copied."""
    path = work / f"ssh-{'immutable' if immutable else 'plain'}-{rep}.toml"
    path.write_text(
        f'[state]\nurl = "sqlite:///{work}/state-ssh-{rep}.db"\n\n'
        f'[origins.src]\nroot = "{server.url(work / "src")}"\nsettle = "1m"\nimmutable = {str(immutable).lower()}\n\n'
        f'[replicas."{work}/replica-{rep}"]\nimport_origins = true\n\n' + server.toml()
    )
    return path


def memos(database: Path) -> int:
    """How many no-change memos the state database holds."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT count(*) FROM memos").fetchone()[0]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def timed(argv: list[str]) -> tuple[float, int, int]:
    """Seconds, peak RSS in KiB and exit code (0, or 2 for a plan with changes) of one process,
    run after flushing the page cache's dirty data, so one step's writeback is not charged to
    the next (on small VMs it otherwise dominates the figures)."""
    os.sync()
    measured = run(argv, ok=(0, 2))
    return measured.wall, measured.rss_kib, measured.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dirs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, interleaved; medians are printed")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--ssh", action="store_true", help="also measure the origin read over ssh (rows 5)")
    parser.add_argument("--dir", default=None,
                        help="where to generate the trees (default: the system's temporary directory); "
                             "a memory file system such as /dev/shm measures CPU work without disk noise")
    arguments = parser.parse_args()
    if arguments.ssh and not sshd_server.available():
        parser.exit(1, "--ssh needs sshd and ssh-keygen (apt-get install openssh-server)\n")
    reconciler = [sys.executable, "-m", "reconciler"]
    where = arguments.dir or tempfile.gettempdir()
    room = os.statvfs(where)
    needed = 3 * (arguments.files + arguments.dirs) + 1000  # the tree, rsync's copy and the replica
    if room.f_favail < needed:  # tmpfs runs out of inodes long before bytes
        parser.exit(1, f"{where} has room for {room.f_favail:,} more files; this run makes {needed:,}. "
                       "Free some, or choose another --dir.\n")
    work = Path(tempfile.mkdtemp(prefix="reconciler-bench-", dir=arguments.dir))
    times: dict[str, list[float]] = {}
    rss: dict[str, int] = {}

    def note(name: str, elapsed: float) -> None:
        times.setdefault(name, []).append(elapsed)

    package = REPO / "reconciler"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, stdout=subprocess.DEVNULL)
    cleanup = contextlib.ExitStack()
    try:
        server = None
        if arguments.ssh:
            server_home = Path(tempfile.mkdtemp(prefix="reconciler-sshd-"))
            cleanup.callback(shutil.rmtree, server_home, ignore_errors=True)
            server = cleanup.enter_context(sshd_server.running_sshd(server_home))
        print(f"generating {arguments.files:,} files in {arguments.dirs} directories under {work} ...", flush=True)
        size = generate(work / "src", arguments.files, arguments.dirs)
        print(f"  {size / 2**20:.1f} MiB; {arguments.repeat} repetitions", flush=True)
        for rep in range(arguments.repeat):
            (work / f"replica-{rep}").mkdir()
            plain, immutable = config(work, rep, False), config(work, rep, True)

            note("find", timed(["find", str(work / "src"), "-type", "f", "-printf", r"%P\t%s\t%T@\n"])[0])
            elapsed, peak, _ = timed([*reconciler, "--config", str(plain), "plan"])
            note("first plan", elapsed)
            rss["plan"] = max(rss.get("plan", 0), peak)

            note("rsync -a", timed(["rsync", "-a", f"{work}/src/", f"{work}/rsync-copy/"])[0])
            elapsed, peak, _ = timed([*reconciler, "--config", str(plain), "apply", "--auto-approve"])
            note("apply", elapsed)
            rss["apply"] = max(rss.get("apply", 0), peak)

            for round_ in range(3):
                note("rsync -an", timed(["rsync", "-an", "--stats", f"{work}/src/", f"{work}/replica-{rep}/src/"])[0])
                elapsed, _, code = timed([*reconciler, "--config", str(plain), "plan", "--detailed-exitcode"])
                assert code == 0, "the replica should be complete"
                note("no-op plan", elapsed)
                elapsed, _, code = timed([*reconciler, "--config", str(immutable), "plan", "--detailed-exitcode"])
                assert code == 0, "the replica should be complete"
                # The first leaves a memo (the plain plans in between change none of its facts).
                note("immutable plan" if round_ == 0 else "immutable plan, replayed", elapsed)
                assert memos(work / f"state-{rep}.db") == 1, "the immutable plan should leave a no-change memo"
                # As reconciler's entry point imports: with the cyclic collector off.
                note("floor", timed([sys.executable, "-c", "import gc; gc.disable(); import sqlmodel; gc.freeze()"])[0])
                note("python", timed([sys.executable, "-c", "pass"])[0])
            if server is not None:
                plain, immutable = ssh_config(work, rep, False, server), ssh_config(work, rep, True, server)
                timed([*reconciler, "--config", str(plain), "apply", "--auto-approve"])  # enrols the replica
                ssh = " ".join(shlex.quote(part) for part in server.command()[:-1])
                for _ in range(3):
                    note("rsync -an over ssh", timed(["rsync", "-an", "--stats", "-e", ssh,
                                                      f"{server.user}@127.0.0.1:{work}/src/",
                                                      f"{work}/replica-{rep}/src/"])[0])
                    for name, path in (("no-op plan over ssh", plain), ("immutable plan over ssh", immutable)):
                        elapsed, _, code = timed([*reconciler, "--config", str(path), "plan", "--detailed-exitcode"])
                        assert code == 0, "the replica should be complete"
                        note(name, elapsed)
            shutil.rmtree(work / "rsync-copy")
            shutil.rmtree(work / f"replica-{rep}")

        def ratios(rows: list[tuple[str, str, str]]) -> None:
            for name, ours, theirs in rows:
                mine, peer = median(times[ours]), median(times[theirs])
                print(f"{name:<46} {mine:>10.2f}s {peer:>10.2f}s {mine / peer:>7.2f}")

        print()
        print(f"{'measurement (medians)':<46} {'reconciler':>11} {'peer':>11} {'ratio':>7}")
        ratios([
            ("1. first plan vs find -printf", "first plan", "find"),
            ("2. plan, replica complete vs rsync -an", "no-op plan", "rsync -an"),
            ("2b. same, immutable = true vs rsync -an", "immutable plan", "rsync -an"),
            ("2c. same, repeated (memo replayed)", "immutable plan, replayed", "rsync -an"),
            ("3. apply to an empty replica vs rsync -a", "apply", "rsync -a"),
            ("   floor: import sqlmodel vs rsync -an", "floor", "rsync -an"),
            ("   floor: python -c pass vs rsync -an", "python", "rsync -an"),
        ])
        print(f"{'4. peak RSS of the first plan':<46} {rss['plan'] / 1024:>8.0f} MiB")
        print(f"{'   peak RSS of apply':<46} {rss['apply'] / 1024:>8.0f} MiB")
        if server is not None:
            ratios([
                ("5. over ssh: plan, complete vs rsync -an", "no-op plan over ssh", "rsync -an over ssh"),
                ("5b. same, immutable = true vs rsync -an", "immutable plan over ssh", "rsync -an over ssh"),
            ])
        print("all runs (s): " + "; ".join(f"{key} " + " ".join(f"{value:.2f}" for value in values)
                                          for key, values in times.items()))
        print(f"files: {arguments.files:,} under {work.parent}; python {sys.version.split()[0]}; "
              f"rsync {subprocess.run(['rsync', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    finally:
        cleanup.close()  # sshd stopped, then its directory removed
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The no-change memo against the full run, over random sequences of world changes.

A replay (engine/memo.py) prints what the last full run printed, without observing. It
is only sound if, whenever it would replay, a full run would print the same. This test
drives a replicas site through random steps (new and removed files and directories, files
rewritten behind the fast path's back, copies removed from the replica, config edits,
another config writing to the same state, the replica root swapped for an empty or copied
directory, and the clock moved past each deadline) and, after every step, asks the replay
what it would print and then makes the full run (in this process, which never replays):
whenever a replay is offered, its output and exit code must be the full run's.

The clock is moved by moving every recorded time back (scans, verifications, checked
copies, the memo itself): what a run sees after ``d`` of waiting.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from reconciler import __version__
from reconciler.cli.logformat import line
from reconciler.engine import memo
from tests.conftest import CliWorkspace
from tests.integration.conftest import make_tree, rewrite_in_place

CONFIGS = {  # variant: (origin's lines, replica's lines); each deadline falls alone somewhere
    "plain": ('full_scan_every = "7d"\n', ""),
    "verified": ('full_scan_every = "60d"\n', 'verify_every = "3d"\n'),
    "scrubbed": ('full_scan_every = "60d"\nchecksum = "sha256"\n', 'scrub_every = "10d"\n'),
}
TEMPLATE = """\
[origins.exao1]
root = "origin"
settle = "2m"
immutable = true
{origin}
[replicas."backup"]
{replica}"""
SHIFTED = {  # table: time columns (SQLAlchemy DateTime as text in SQLite)
    "origin_status": ("last_full_scan", "last_scan"),
    "replica_status": ("last_verify", "offline_since"),
    "replica_copies": ("checked_at",),
}
NO_CHANGES = "No changes. Everything matches the configuration.\n"
STEPS = ["new file", "new directory", "remove file", "rewrite in place", "remove copy", "edit config",
         "other config", "empty replica root", "copied replica root", "advance 1h", "advance 4d",
         "advance 8d", "advance 40d", "reconcile", "nothing"]


def _config(variant: str) -> str:
    origin, replica = CONFIGS[variant]
    return TEMPLATE.format(origin=origin, replica=replica)


class World(CliWorkspace):
    """A site and the steps that change it."""

    counter = 0
    variant = "plain"

    @property
    def database(self) -> str:
        return self.state_url.removeprefix("sqlite:///")

    def files(self) -> list[Path]:
        return sorted(path for path in (self.root / "origin").rglob("*") if path.is_file())

    def step(self, name: str, pick: int) -> None:
        self.counter += 1
        origin, backup = self.root / "origin", self.root / "backup"
        files = self.files()
        if name == "new file" and files:
            directory = files[pick % len(files)].parent
            stamp = directory.stat()
            make_tree(directory, {f"n{self.counter}.bin": "n" * self.counter})
            if pick % 2:  # an old directory whose mtime a copy tool kept: only a full scan sees it
                os.utime(directory, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        elif name == "new directory":
            make_tree(origin, {f"d{self.counter}/sub/f.bin": "new directory"})
        elif name == "remove file" and files:
            files[pick % len(files)].unlink()
        elif name == "rewrite in place" and files:
            rewrite_in_place(files[pick % len(files)], "rewritten " * (pick % 5 + 1), age_seconds=7200)
        elif name == "remove copy":
            copies = sorted(path for path in backup.rglob("*") if path.is_file() and ".reconciler" not in path.name)
            if copies:
                copies[pick % len(copies)].unlink()
        elif name == "edit config":
            self.variant = sorted(CONFIGS)[pick % len(CONFIGS)]
            self.config.write_text(_config(self.variant))
        elif name == "other config":  # another config, same origin name, on the same state
            other = self.root / "other.toml"
            (self.root / "backup2").mkdir(exist_ok=True)
            other.write_text(_config("plain").replace('"backup"', '"backup2"'))
            assert self.run_other(other) in (0, 2)
        elif name == "empty replica root":
            shutil.rmtree(self.root / "unmounted", ignore_errors=True)
            backup.rename(self.root / "unmounted")
            backup.mkdir()
        elif name == "copied replica root":
            shutil.copytree(backup, self.root / "copy", symlinks=True, copy_function=shutil.copy2)
            shutil.rmtree(backup)
            (self.root / "copy").rename(backup)
        elif name.startswith("advance"):
            self.advance({"1h": timedelta(hours=1), "4d": timedelta(days=4), "8d": timedelta(days=8),
                          "40d": timedelta(days=40)}[name.split()[1]])
        elif name == "reconcile":
            assert self.cli("reconcile").code in (0, 1, 2)

    def run_other(self, other: Path) -> int:
        return self.cli_args(["--config", str(other), "--state", self.state_url, "plan"])

    def cli_args(self, args: list[str]) -> int:
        from tests.conftest import invoke_cli

        return invoke_cli(args, self.capsys).code

    def advance(self, by: timedelta) -> None:
        """As if ``by`` had passed: every recorded time moved back by it, and the memo's digests of
        those rows with them (a fact that held before still holds: the run that wrote both happened
        earlier), its deadline too."""
        with sqlite3.connect(self.database) as connection:
            memos = connection.execute("SELECT rowid, checks FROM memos").fetchall()
            held = [(rowid, json.loads(checks), [memo.rows_digest(connection.execute(sql, parameters).fetchall())
                                                 == digest for sql, parameters, digest in json.loads(checks)["facts"]])
                    for rowid, checks in memos]
            for table, columns in SHIFTED.items():
                for column in columns:
                    rows = connection.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} IS NOT NULL")
                    for rowid, value in rows.fetchall():
                        moved = datetime.fromisoformat(value) - by
                        connection.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                                           (moved.isoformat(sep=" "), rowid))
            for rowid, checks, holds in held:
                checks["facts"] = [[sql, parameters, memo.rows_digest(connection.execute(sql, parameters).fetchall())
                                    if holding else digest]
                                   for (sql, parameters, digest), holding in zip(checks["facts"], holds, strict=True)]
                connection.execute("UPDATE memos SET checks = ?, made_at = made_at - ?, valid_until = valid_until - ?"
                                   " WHERE rowid = ?", (json.dumps(checks), by.total_seconds(), by.total_seconds(),
                                                        rowid))

    def compare(self) -> bool:
        """Whether a replay was offered; when one is, it must print what the full run prints."""
        argv = self.args("plan", "--detailed-exitcode")
        replay = memo.check(argv, dict(os.environ), __version__)
        replayed = None
        if replay is not None:
            self.capsys.readouterr()
            code = memo.emit(replay, line)
            replayed = (code, self.capsys.readouterr().out)
        full = self.cli("plan", "--detailed-exitcode")
        if replayed is not None:
            assert replayed == (full.code, full.out), f"replayed {replayed!r}, the full run printed {full.out!r}"
        return replayed is not None


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    monkeypatch.delenv("RECONCILER_STATE", raising=False)
    return World(tmp_path_factory.mktemp("world"), "", capsys)


@pytest.mark.slow
# Shrinking is off: a failing sequence of a few steps is readable as found, and CI stays bounded.
@settings(max_examples=12, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 1000)), min_size=3, max_size=10))
# Each deadline once for sure: the full scan, the verification, the scrub.
@example(steps=[("new file", 1), ("advance 8d", 0)])
@example(steps=[("edit config", 2), ("reconcile", 0), ("nothing", 0), ("remove copy", 0), ("advance 4d", 0)])
@example(steps=[("edit config", 1), ("reconcile", 0), ("nothing", 0), ("advance 40d", 0)])
def test_a_replay_always_prints_what_the_full_run_prints(world: World, steps: list[tuple[str, int]]) -> None:
    root = world.root / f"run{World.counter}"
    World.counter += 1
    root.mkdir()
    site = World(root, f"sqlite:///{root / 'reconciler.db'}", world.capsys)
    make_tree(root / "origin", {"telem/d1/a.bin": "alpha", "telem/d2/b.bin": "beta", "top.bin": "t"})
    (root / "backup").mkdir()
    site.config.write_text(_config("plain"))
    assert site.cli("reconcile").code == 0
    for name, pick in [("nothing", 0), *steps, ("reconcile", 0), ("nothing", 0)]:
        site.step(name, pick)
        site.compare()
    # Not vacuous: a run that finds nothing leaves a memo, and the next one is replayed.
    if site.cli("plan").out == NO_CHANGES:
        assert site.compare()


def test_the_comparison_is_not_vacuous(world: World) -> None:
    """After a converging run, a plan that finds nothing leaves a memo the next plan replays."""
    site = world
    make_tree(site.root / "origin", {"a/b.bin": "b"})
    (site.root / "backup").mkdir()
    site.state_url = f"sqlite:///{site.root / 'reconciler.db'}"
    site.config.write_text(_config("plain"))
    assert site.cli("reconcile").code == 0
    assert site.cli("plan").out == NO_CHANGES
    assert site.compare()

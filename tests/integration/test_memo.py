"""The no-change memo (engine/memo.py): a run that would find nothing to do again is replayed
by the real program before it loads anything heavy; anything it rests on that changes means
a full run, and that run's result.

Every command here runs the real `reconciler` program (``site.run``: a subprocess through the
entry point, where the replay happens); setup steps may run in this process (``site.cli``,
which never replays but writes memos as any run does).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from reconciler.state import lock
from reconciler.state.store import StateStore
from tests.conftest import REPO, invoke_cli, run_cli
from tests.integration.conftest import Site, make_tree, rewrite_in_place, tree

IMMUTABLE = """\
[origins.exao1]
root = "origin"
settle = "2m"
immutable = true
{origin_extra}
[replicas."backup"]
{replica_extra}"""
REPLAYED = "converged: nothing to do (nothing it rests on changed since the run of"
NO_CHANGES = "No changes. Everything matches the configuration.\n"


def _config(origin_extra: str = "", replica_extra: str = "") -> str:
    return IMMUTABLE.format(origin_extra=origin_extra, replica_extra=replica_extra)


def _converged(site, config: str | None = None, files: dict | None = None) -> None:
    """An origin copied to its replica, and a memo of the run that then found nothing to do."""
    (site.root / "backup").mkdir(exist_ok=True)
    make_tree(site.root / "origin", files or {"telem/d1/a.bin": "alpha", "telem/d2/b.bin": "beta", "top.bin": "t"})
    site.write(config or _config())
    assert site.cli("reconcile").code == 0
    assert site.cli("plan").out == NO_CHANGES  # nothing to do: this run leaves a memo


def _database(site) -> str:
    return site.state_url.removeprefix("sqlite:///")


def _last_scan(site) -> str:
    with sqlite3.connect(_database(site)) as connection:
        return connection.execute("SELECT last_scan FROM origin_status WHERE origin = 'exao1'").fetchone()[0]


def _memos(site) -> int:
    with sqlite3.connect(_database(site)) as connection:
        return connection.execute("SELECT count(*) FROM memos").fetchone()[0]


@pytest.fixture
def sqlite_site(tmp_path, capsys, monkeypatch) -> Site:
    """A replicas workspace on a SQLite state, where memos are kept (PostgreSQL: the last test)."""
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    (tmp_path / "state").mkdir(exist_ok=True)
    return Site(tmp_path, f"sqlite:///{tmp_path / 'state' / 'reconciler.db'}", capsys)


def test_a_run_with_nothing_new_is_replayed_without_reading_or_writing_anything(sqlite_site):
    site = sqlite_site
    _converged(site)
    scanned = _last_scan(site)
    replay = site.run("plan", "--detailed-exitcode")
    assert (replay.code, replay.out, replay.err) == (0, NO_CHANGES, "")  # exactly what the full run printed
    replay = site.run("reconcile")
    assert replay.code == 0 and REPLAYED in replay.err
    assert "4 directories checked" in replay.err  # the root, telem, telem/d1, telem/d2
    assert _last_scan(site) == scanned  # neither replay scanned the origin (a full run records its scan)
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")


def test_a_new_file_or_directory_means_a_full_run_that_copies_it(sqlite_site):
    site = sqlite_site
    _converged(site)
    make_tree(site.root / "origin", {"telem/d1/new.bin": "new in an old directory"})
    plan = site.run("plan", "--detailed-exitcode")
    assert plan.code == 2 and "telem/d1/new.bin" in plan.out
    make_tree(site.root / "origin", {"telem/d3/deeper/c.bin": "in a new directory"})
    result = site.run("reconcile")
    assert result.code == 0 and REPLAYED not in result.err
    assert (site.root / "backup/exao1/telem/d3/deeper/c.bin").read_text() == "in a new directory"
    assert site.run("plan").out == NO_CHANGES
    assert REPLAYED in site.run("reconcile").err  # and the memo of that run is replayed in turn


def test_a_run_that_found_something_to_do_leaves_no_memo(sqlite_site):
    site = sqlite_site
    _converged(site)
    make_tree(site.root / "origin", {"telem/d1/new.bin": "new"})
    assert site.cli("plan", "--detailed-exitcode").code == 2
    assert _memos(site) == 0
    make_tree(site.root / "origin", {"telem/d2/fresh.bin": "still being written"}, age_seconds=0)
    assert site.cli("reconcile").code == 0  # copies new.bin; fresh.bin waits for the settle time
    assert _memos(site) == 0  # something is waiting: every run must look again
    assert "waiting: 1 files" in site.run("plan").out


def test_an_edited_config_means_a_full_run(sqlite_site):
    site = sqlite_site
    _converged(site)
    site.write(_config() + "# reviewed\n")
    assert REPLAYED not in site.run("reconcile").err
    assert REPLAYED in site.run("reconcile").err  # the edited config's own memo
    (site.root / "backup2").mkdir()
    site.write(_config() + '\n[replicas."backup2"]\n')
    result = site.run("reconcile")
    assert result.code == 0 and REPLAYED not in result.err
    assert tree(site.root / "backup2/exao1") == tree(site.root / "origin")


def test_a_replica_unmounted_or_gone_means_a_full_run_that_says_so(sqlite_site):
    site = sqlite_site
    _converged(site)
    scanned = _last_scan(site)
    shutil.move(site.root / "backup", site.root / "mounted-disk")
    (site.root / "backup").mkdir()  # an empty mount point in its place: another directory
    site.run("plan")
    assert _last_scan(site) != scanned  # observed again, not replayed
    (site.root / "backup").rmdir()
    plan = site.run("plan")
    assert plan.code == 1 and "does not exist or is not a directory" in plan.out


def test_a_change_another_run_recorded_in_the_state_means_a_full_run(sqlite_site):
    # A second config on the same state, with the origin not immutable, sees a file rewritten
    # in place (its directory's mtime kept, which the immutable fast path cannot see) and
    # records it. The immutable config's memo rested on the inventory as it was: not replayed.
    site = sqlite_site
    _converged(site)
    rewrite_in_place(site.root / "origin/telem/d1/a.bin", "alpha, rewritten", age_seconds=3600)
    assert site.run("plan").out == NO_CHANGES  # immutable: unseen, replayed or not
    mutable = site.root / "mutable.toml"
    mutable.write_text(_config().replace("immutable = true", "immutable = false"))
    other = site.run("--config", str(mutable), "plan", "--detailed-exitcode")
    assert other.code == 2 and "1 changed on origin exao1" in other.out
    plan = site.run("plan", "--detailed-exitcode")
    assert plan.code == 2 and "telem/d1/a.bin" in plan.out


def test_a_full_scan_falling_due_means_a_full_run(sqlite_site):
    site = sqlite_site
    _converged(site, _config(origin_extra='full_scan_every = "2s"'))
    rewrite_in_place(site.root / "origin/telem/d2/b.bin", "beta, rewritten", age_seconds=3600)
    time.sleep(2.1)
    result = site.run("reconcile")
    assert result.code == 0 and REPLAYED not in result.err
    assert (site.root / "backup/exao1/telem/d2/b.bin").read_text() == "beta, rewritten"


def test_a_verification_falling_due_means_a_full_run_that_finds_drift(sqlite_site):
    site = sqlite_site
    _converged(site, _config(replica_extra='verify_every = "2s"'))
    (site.root / "backup/exao1/telem/d1/a.bin").unlink()  # lost on the replica
    time.sleep(2.1)
    plan = site.run("plan", "--detailed-exitcode")
    assert plan.code == 2 and "drift" in plan.out


def test_full_scan_and_unknown_options_always_run_in_full(sqlite_site):
    site = sqlite_site
    _converged(site)
    assert json.loads(site.run("plan", "--format", "json").out)["actions"] == []  # JSON is never replayed
    rewrite_in_place(site.root / "origin/top.bin", "top, rewritten", age_seconds=3600)
    plan = site.run("plan", "--full-scan", "--detailed-exitcode")
    assert plan.code == 2 and "top.bin" in plan.out


def test_a_held_lock_is_reported_not_replayed(sqlite_site):
    site = sqlite_site
    _converged(site)
    store = StateStore(site.state_url)
    held = lock.acquire(store, "apply")
    try:
        result = site.run("reconcile")
        assert result.code == 1 and "locked by" in result.err
    finally:
        lock.release(store, held)
        store.dispose()
    assert REPLAYED in site.run("reconcile").err  # released: nothing the memo rests on changed


def test_rsync_gone_from_path_means_a_full_run_that_says_so(sqlite_site, tmp_path):
    site = sqlite_site
    _converged(site)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = site.run("reconcile", env={"PATH": str(empty)})
    assert result.code == 1 and "rsync" in result.err and "apt-get install rsync" in result.err


def test_no_memo_for_a_mutable_origin(sqlite_site):
    site = sqlite_site
    _converged(site, _config().replace("immutable = true", "immutable = false"))
    assert _memos(site) == 0
    assert REPLAYED not in site.run("reconcile").err


@pytest.mark.state_store
def test_no_memo_in_postgresql(site):
    if site.state_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL variant")
    _converged(site)
    assert REPLAYED not in site.run("reconcile").err
    store = StateStore(site.state_url)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM memos").scalar() == 0
    finally:
        store.dispose()


def test_a_memo_of_a_removed_state_is_gone_with_it(sqlite_site):
    site = sqlite_site
    _converged(site)
    os.remove(_database(site))  # the state is a cache: it is rebuilt by observing
    plan = site.run("plan", "--detailed-exitcode")
    assert plan.code == 2 and "3 files new on origin exao1" in plan.out  # rsync finds them there already
    assert _memos(site) == 0


def test_a_replay_loads_nothing_heavy(sqlite_site):
    # The point of a replay: the standard library and a few small modules of ours, not the
    # half second of SQLAlchemy, pydantic, click, jinja2 and the kinds a full run loads.
    site = sqlite_site
    _converged(site)
    probe = (
        "import sys\n"
        "from reconciler.cli.entry import replayed\n"
        f"assert replayed({site.args('reconcile')!r}) == 0\n"
        "heavy = {'sqlalchemy', 'sqlmodel', 'pydantic', 'click', 'jinja2', 'rich', 'tomlkit', 'pymongo', 'sh'}\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy\n"
        "             or name.startswith(('reconciler.kinds', 'reconciler.cli.main'))))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr
    assert REPLAYED in completed.stderr and completed.stdout == "[]\n"


@pytest.mark.parametrize("remote", ["origin", "replica"])
def test_no_memo_with_an_ssh_location(sqlite_site, sshd, remote):
    # What a replay checks is local (stat, access); a remote tree is observed every time.
    site = sqlite_site
    make_tree(site.root / "origin", {"telem/a.bin": "alpha"})
    (site.root / "backup").mkdir()
    origin = sshd.url(site.root / "origin") if remote == "origin" else "origin"
    replica = sshd.url(site.root / "backup") if remote == "replica" else "backup"
    site.write(f'[origins.exao1]\nroot = "{origin}"\nimmutable = true\n\n[replicas."{replica}"]\n\n' + sshd.toml())
    assert site.cli("reconcile").code == 0
    assert site.cli("plan").out == NO_CHANGES
    assert _memos(site) == 0
    assert REPLAYED not in site.run("reconcile").err


def test_a_replay_finds_the_default_state_in_a_directory_with_awkward_characters(tmp_path, capsys, monkeypatch):
    # The default state (state/reconciler.db next to the config): ?, # and % in the directory's
    # name must reach SQLAlchemy quoted, and the replay's SQLite URI escaped, to be one file.
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    root = tmp_path / "data ?#%20 100%"
    make_tree(root / "origin", {"telem/a.bin": "alpha"})
    (root / "backup").mkdir()
    (root / "reconciler.toml").write_text(_config())
    args = ["--config", str(root / "reconciler.toml")]
    assert invoke_cli([*args, "reconcile"], capsys).code == 0
    assert invoke_cli([*args, "plan"], capsys).out == NO_CHANGES
    assert (root / "state" / "reconciler.db").is_file()
    assert REPLAYED in run_cli([*args, "reconcile"]).err

"""The lock, kill -9 and signals: real processes against a real state database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.errors import LockError, StateError
from reconciler.state import lock
from reconciler.state.store import StateStore
from reconciler.state.tables import LockRecord
from tests.conftest import REPO, popen_cli, run_cli
from tests.engine.conftest import TOY_PLUGIN

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store


def _wait_for_file(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _held_apply(workspace, files: dict[str, dict[str, object]], command: str = "apply"):
    """A real `reconciler apply` (or reconcile) stopped inside the action of 'held' until the test
    creates the file returned: it holds the lock for exactly as long as the test wants."""
    release = workspace.root / "release-held"
    workspace.write_config(files)
    args = ("apply", "--auto-approve") if command == "apply" else (command,)
    process = popen_cli(workspace.args(*args), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    _wait_for_file(Path(f"{release}.waiting"))
    return process, release


def _holder_process(state_url: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """tests/engine/lockholder.py: holds the lock until its stdin closes; (process, lock id)."""
    process = subprocess.Popen([sys.executable, "-m", "tests.engine.lockholder", state_url, "backups restore",
                                *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("locked "), line
    return process, line.split()[1]


def test_a_second_apply_fails_at_once_naming_the_holder(workspace):
    first, release = _held_apply(workspace, {"held": {"content": "s", "hold": str(workspace.root / "release-held")}})
    try:
        store = StateStore(workspace.state_url)
        holder = lock.holder(store)
        store.dispose()
        assert holder is not None and holder.pid == first.pid
        second = workspace.run("apply", "--auto-approve")
        assert second.code == 1
        # SQLite: one lock for everything; PostgreSQL: the address both plans touch
        locked = "the state database" if workspace.state_url.startswith("sqlite") else "toy:held"
        assert f"{locked} is locked by" in second.err and "still running" in second.err
        assert f"pid {first.pid}, apply since" in second.err and holder.lock_id in second.err
        assert "Traceback" not in second.err and len(second.err.strip().splitlines()) == 1
        waited = workspace.run("reconcile", "--lock-timeout", "1s")
        assert waited.code == 1 and "locked by" in waited.err
        first.send_signal(signal.SIGTERM)  # SIGTERM lets the running action finish...
    finally:
        release.touch()  # ...which it does when the test lets it
        first.wait(60)
    assert first.returncode == 0
    assert workspace.files() == {"held": "s"}


def test_a_waiting_apply_gets_the_lock_when_it_is_released(workspace):
    first, release = _held_apply(workspace, {"held": {"content": "s", "hold": str(workspace.root / "release-held")}})
    second = popen_cli(workspace.args("reconcile", "--lock-timeout", "5m"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    try:
        assert second.stderr is not None
        for line in second.stderr:  # the waiting run says so before the holder is let go
            if "waiting up to 300 s for the lock held by" in line:
                assert f"pid {first.pid}, apply since" in line
                break
        else:
            raise AssertionError("the second run never waited")
    finally:
        release.touch()
    first.wait(60)
    _out, err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err
    assert workspace.files() == {"held": "s"}


def test_kill_9_mid_apply_then_the_next_unattended_run_takes_the_lock_and_converges(workspace):
    release = workspace.root / "release-held"
    files = {"done": {"content": "d"}, "held": {"content": "h", "hold": str(release), "after": ["done"]}}
    first, release = _held_apply(workspace, files)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert workspace.files() == {"done": "d"}  # nothing half-written under a final name
    store = StateStore(workspace.state_url)
    left = lock.holder(store)
    store.dispose()
    assert left is not None and left.pid == first.pid  # the row stays; the OS/server dropped the lock itself

    release.touch()  # the same config and the same cron line: the held action no longer waits
    again = workspace.run("reconcile")
    assert again.code == 0, again.err
    assert "took over the lock of" in again.err and f"pid {first.pid}" in again.err
    assert workspace.files() == {"done": "d", "held": "h"}
    assert workspace.run("plan", "--detailed-exitcode").code == 0

    journal = json.loads(workspace.run("history", "--json").out)
    killed = [row for row in journal if row["run_id"] != journal[-1]["run_id"]]
    assert {(row["address"], row["status"], row["run_status"]) for row in killed} == {
        ("toy:done", "succeeded", "interrupted"), ("toy:held", "interrupted", "interrupted")}
    assert "process died" in next(row["error"] for row in killed if row["status"] == "interrupted")
    assert {row["run_status"] for row in journal if row not in killed} == {"succeeded"}
    store = StateStore(workspace.state_url)
    assert lock.holder(store) is None  # released by the run that took it over
    store.dispose()


def test_kill_9_of_a_holder_whose_forked_child_lives_on_frees_the_lock(state_url):
    # The replica walker forks workers while the lock is held; one that outlives a killed
    # parent must not keep the lock alive.
    StateStore(state_url).dispose()
    holder, lock_id = _holder_process(state_url, "--fork")
    assert holder.stdout is not None
    child = int(holder.stdout.readline().split()[1])
    holder.kill()
    holder.wait(30)
    try:
        os.kill(child, 0)  # still alive, blocked on the pipe
        store = StateStore(state_url)
        taken = lock.acquire(store, "apply")
        assert taken.replaced is not None and taken.replaced.lock_id == lock_id
        lock.release(store, taken)
        store.dispose()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the child reads EOF and exits


def test_force_unlock_refuses_a_live_holder_and_removes_a_dead_ones_row(workspace):
    workspace.write_config({"a": {"content": "1"}})
    StateStore(workspace.state_url).dispose()
    holder, lock_id = _holder_process(workspace.state_url)
    try:
        refused = workspace.run("force-unlock", lock_id)
        assert refused.code == 1 and "Traceback" not in refused.err
        assert f"lock {lock_id} is held by" in refused.err and f"pid {holder.pid}, backups restore since" in refused.err
        assert f"kill {holder.pid}" in refused.err
        blocked = workspace.run("reconcile")
        assert blocked.code == 1 and f"pid {holder.pid}, backups restore since" in blocked.err
    finally:
        holder.kill()
        holder.wait(30)
    unlocked = workspace.run("force-unlock", lock_id)
    assert unlocked.code == 0 and lock_id in unlocked.out
    assert workspace.run("reconcile").code == 0 and workspace.files() == {"a": "1"}


def test_a_clean_release_leaves_no_row(state_url):
    StateStore(state_url).dispose()
    holder, _lock_id = _holder_process(state_url)
    out, _err = holder.communicate("", timeout=60)
    assert holder.returncode == 0 and "released" in out
    store = StateStore(state_url)
    assert lock.holder(store) is None
    store.dispose()


def test_force_unlock_of_an_unknown_lock_is_a_clear_error(workspace):
    workspace.write_config({})
    result = workspace.cli("force-unlock", "no-such-lock")
    assert result.code == 1 and "no lock with id no-such-lock; the state database is not locked" in result.err


def test_a_lock_from_another_host_is_respected_on_sqlite_and_judged_on_postgresql(workspace):
    workspace.write_config({"a": {"content": "1"}})
    store = StateStore(workspace.state_url)
    with store.session() as session:
        session.add(LockRecord(name="apply", lock_id="L-remote", who="ops@elsewhere", host="elsewhere",
                               pid=os.getpid() + 10_000_000, operation="reconcile",
                               created_at=datetime.now(UTC)))
        session.commit()
    store.dispose()
    result = workspace.cli("apply", "--auto-approve")
    if workspace.state_url.startswith("sqlite"):
        # Its file lock may not reach this host (a shared file system): only that host or a person can tell.
        assert result.code == 1
        assert "locked by ops@elsewhere" in result.err and "on another host, elsewhere" in result.err
        assert "reconciler force-unlock L-remote" in result.err
        assert workspace.files() == {}
        assert workspace.cli("force-unlock", "L-remote").code == 0
        result = workspace.cli("apply", "--auto-approve")
    else:
        # Every host's advisory locks live in the one server: its holder provably holds nothing.
        assert "took over the lock of ops@elsewhere" in result.err
    assert result.code == 0, result.err
    assert workspace.files() == {"a": "1"}


def test_a_memory_state_is_locked_within_its_process():
    store = StateStore("sqlite:///:memory:")
    first = lock.acquire(store, "apply")
    with pytest.raises(LockError, match="locked by .* still running"):
        lock.acquire(store, "apply")
    lock.release(store, first)
    with lock.held(store, "projects export") as again:
        assert lock.holder(store).lock_id == again.lock_id
    assert lock.holder(store) is None
    store.dispose()


def test_a_read_only_state_directory_is_one_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(StateError, match=r"cannot create the lock file .*reconciler\.db\.schema\.lock beside the "
                                             r"state database \(Permission denied\); make .* writable"):
            StateStore(f"sqlite:///{directory / 'reconciler.db'}")
    finally:
        directory.chmod(0o755)


def test_a_state_directory_nobody_can_write_is_one_clear_cli_error(tmp_path):
    # /proc/self takes no new files, not even root's: the same refusal, runnable as root.
    (tmp_path / "reconciler.toml").write_text("")
    result = run_cli(["--config", str(tmp_path / "reconciler.toml"), "--state", "sqlite:////proc/self/reconciler.db",
                      "reconcile"])
    assert result.code == 1 and "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert "cannot create the lock file /proc/self/reconciler.db.schema.lock beside the state database" in result.err
    assert "make /proc/self writable by this user, or point --state" in result.err


def test_reconcile_watch_stops_cleanly_on_sigterm(workspace):
    workspace.write_config({"a": {"content": "1"}})
    watcher = popen_cli(workspace.args("reconcile", "--watch", "1h"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    deadline = time.monotonic() + 30
    while "a" not in workspace.files() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    watcher.send_signal(signal.SIGTERM)
    _out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "received SIGTERM" in err and "stopped" in err
    assert "write toy:a: started" in err  # one timestamped log line per action
    assert workspace.files() == {"a": "1"}


def test_backups_restore_and_projects_export_take_the_same_lock(workspace):
    workspace.write_config({"a": {"content": "1"}})
    StateStore(workspace.state_url).dispose()
    dump = REPO / "tests" / "data" / "jobflow-remote"
    restore = ("backups", "restore", str(dump), "--uri", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500",
               "--database", "never")
    export = ("projects", "export", "P1", "--instance", "nowhere", "-o", str(workspace.root / "P1.bundle.tar"))
    holder, lock_id = _holder_process(workspace.state_url)
    try:
        for command in (restore, export):
            refused = workspace.run(*command)
            assert refused.code == 1 and "Traceback" not in refused.err, refused.err
            assert "locked by" in refused.err and f"pid {holder.pid}, backups restore since" in refused.err
            assert lock_id in refused.err
    finally:
        holder.kill()
        holder.wait(30)
    # The holder is gone: both get past the lock (and fail on what this test does not provide).
    restored = workspace.run(*restore)
    assert restored.code == 1 and "locked" not in restored.err and "127.0.0.1:1" in restored.err, restored.err
    exported = workspace.run(*export)
    assert exported.code == 1 and "locked" not in exported.err and "nowhere" in exported.err, exported.err
    store = StateStore(workspace.state_url)
    assert lock.holder(store) is None  # each took the dead holder's lock over and released it
    store.dispose()


def test_a_lock_kept_open_by_a_child_of_a_dead_holder_says_so(tmp_path):
    # What the fork hook prevents, made on purpose: a child that inherited the lock file's
    # descriptor (as any process started without close-on-exec would) outlives its parent.
    state_url = f"sqlite:///{tmp_path / 'reconciler.db'}"
    StateStore(state_url).dispose()
    keeper = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
if os.fork() == 0:
    sys.stdin.readline()
    os._exit(0)
print(os.getpid(), flush=True)
os._exit(0)
"""
    lock_path = tmp_path / "reconciler.db.lock"
    lock_path.touch()
    process = subprocess.Popen([sys.executable, "-c", keeper, str(lock_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdin is not None
    parent = int(process.stdout.readline())
    process.wait(30)
    store = StateStore(state_url)
    with store.session() as session:
        session.add(LockRecord(name="apply", lock_id="L-gone", who="ops@here", host=socket.gethostname(),
                               pid=parent, operation="reconcile", created_at=datetime.now(UTC)))
        session.commit()
    try:
        with pytest.raises(LockError, match=r"pid \d+, reconcile since .*whose process is gone but a process it "
                                            r"started still holds its lock "
                                            r"\(`fuser .*reconciler\.db\.lock` names it\)"):
            lock.acquire(store, "apply")
    finally:
        process.stdin.close()
        store.dispose()


@pytest.mark.postgres
def test_the_postgresql_lock_session_asks_the_server_to_notice_a_vanished_client(state_url):
    if state_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL variant")
    from sqlalchemy import text

    store = StateStore(state_url)
    with lock.held(store, "apply") as held:
        connection = held.guard.connection  # type: ignore[attr-defined]
        settings = [connection.execute(text(f"SHOW {name}")).scalar()
                    for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")]
    store.dispose()
    assert settings == ["60", "10", "6"]

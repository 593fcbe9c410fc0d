"""The lock, kill -9 and signals: real processes against a real state database."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

from reconciler.state import lock
from reconciler.state.store import StateStore
from reconciler.state.tables import LockRecord
from tests.conftest import popen_cli
from tests.engine.conftest import TOY_PLUGIN


def _wait_for_lock(state_url: str, timeout: float = 30) -> LockRecord:
    store = StateStore(state_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                current = lock.holder(store)
            except Exception:  # the database may not exist yet
                current = None
            if current is not None:
                return current
            time.sleep(0.05)
        raise AssertionError("the first run never took the lock")
    finally:
        store.dispose()


def test_a_second_apply_fails_at_once_naming_the_holder(workspace):
    workspace.write_config({"slow": {"content": "s", "slow": "6s"}})
    first = popen_cli(workspace.args("apply", "--auto-approve"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    try:
        holder = _wait_for_lock(workspace.state_url)
        started = time.monotonic()
        second = workspace.run("apply", "--auto-approve")
        assert time.monotonic() - started < 15
        assert second.code == 1
        assert "the state database is locked by" in second.err
        assert f"pid {first.pid}, apply since" in second.err and holder.lock_id in second.err
        waited = workspace.run("reconcile", "--lock-timeout", "1s")
        assert waited.code == 1 and "locked by" in waited.err
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 143  # SIGTERM stops the running action at its next safe point
    assert workspace.files() == {}


def test_a_waiting_apply_gets_the_lock_when_it_is_released(workspace):
    workspace.write_config({"slow": {"content": "s", "slow": "2s"}})
    first = popen_cli(workspace.args("apply", "--auto-approve"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    _wait_for_lock(workspace.state_url)
    second = workspace.run("reconcile", "--lock-timeout", "60s")
    first.wait(60)
    assert first.returncode == 0 and second.code == 0, second.err


def test_kill_9_mid_apply_leaves_a_stale_lock_and_the_next_run_converges(workspace):
    workspace.write_config({"done": {"content": "d"}, "slow": {"content": "s", "slow": "30s", "after": ["done"]}})
    first = popen_cli(workspace.args("apply", "--auto-approve"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    held = _wait_for_lock(workspace.state_url)
    deadline = time.monotonic() + 30
    while "done" not in workspace.files() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert workspace.files() == {"done": "d"}  # nothing half-written under a final name

    blocked = workspace.run("reconcile")
    assert blocked.code == 1
    assert "stale lock" in blocked.err and "no longer running" in blocked.err
    assert f"reconciler force-unlock {held.lock_id}" in blocked.err

    unlocked = workspace.run("force-unlock", held.lock_id)
    assert unlocked.code == 0 and held.lock_id in unlocked.out
    workspace.write_config({"done": {"content": "d"}, "slow": {"content": "s", "after": ["done"]}})
    assert workspace.run("reconcile").code == 0
    assert workspace.files() == {"done": "d", "slow": "s"}
    again = workspace.run("plan", "--detailed-exitcode")
    assert again.code == 0


def test_force_unlock_of_an_unknown_lock_is_a_clear_error(workspace):
    workspace.write_config({})
    result = workspace.cli("force-unlock", "no-such-lock")
    assert result.code == 1 and "no lock with id no-such-lock; the state database is not locked" in result.err


def test_a_lock_from_another_host_is_not_called_stale(workspace):
    workspace.write_config({"a": {"content": "1"}})
    store = StateStore(workspace.state_url)
    with store.session() as session:
        session.add(LockRecord(name="apply", lock_id="L-remote", who="ops@elsewhere", host="elsewhere",
                               pid=os.getpid() + 10_000_000, operation="reconcile",
                               created_at=datetime.now(timezone.utc)))
        session.commit()
    store.dispose()
    result = workspace.cli("apply", "--auto-approve")
    assert result.code == 1
    assert "locked by ops@elsewhere" in result.err and "stale" not in result.err
    assert workspace.files() == {}


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

"""Stopping a run with signals: the first SIGINT/SIGTERM ends the current action cleanly (or at
its next safe point), records it as interrupted (not failed), skips the rest and exits 128 +
the signal; a second stops at once; never a traceback; the next run converges. Real processes,
real state databases, the test-only toy kind (whose slow write honours the stop request)."""

from __future__ import annotations

import signal
import time

import pytest
from sqlmodel import select

from reconciler.state.journal import entries
from reconciler.state.store import StateStore
from reconciler.state.tables import RunRecord
from tests.conftest import popen_cli
from tests.engine.conftest import TOY_PLUGIN


def _started(workspace, name: str, process) -> None:
    marker = workspace.world / f".started-{name}"
    deadline = time.monotonic() + 30
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not marker.exists() or process.poll() is not None:
        process.kill()
        out, err = process.communicate(timeout=30)
        raise AssertionError(f"the slow action did not start: exit {process.returncode}\n{out}\n{err}")


def _last_run(workspace) -> tuple[str, dict[str, str]]:
    store = StateStore(workspace.state_url)
    try:
        with store.session() as session:
            run = session.exec(select(RunRecord).order_by(RunRecord.started_at.desc())).first()  # type: ignore[attr-defined]
        statuses = {entry.address: entry.status for entry in entries(store, run.run_id)}
        return run.status, statuses
    finally:
        store.dispose()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.state_store
def test_a_signal_stops_the_current_action_cleanly_records_it_interrupted_and_exits_128_plus(workspace, signum, code):
    workspace.write_config({"first": {"content": "1"}, "slow": {"content": "s", "slow": "60s", "after": ["first"]},
                            "last": {"content": "l", "after": ["slow"]}, "other": {"content": "o", "after": ["slow"]}})
    process = popen_cli(workspace.args("apply", "--auto-approve"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    _started(workspace, "slow", process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in out + err
    assert f"received {signal.Signals(signum).name}" in err
    assert "Interrupted: toy:slow (write)" in out and "Apply interrupted:" in out
    assert workspace.files() == {"first": "1"}
    status, actions = _last_run(workspace)
    assert status == "interrupted"
    assert actions["toy:first"] == "succeeded" and actions["toy:slow"] == "interrupted"
    assert actions["toy:last"] == "skipped"
    workspace.write_config({"first": {"content": "1"}, "slow": {"content": "s", "after": ["first"]},
                            "last": {"content": "l", "after": ["slow"]}, "other": {"content": "o", "after": ["slow"]}})
    assert workspace.run("reconcile").code == 0
    assert workspace.files() == {"first": "1", "slow": "s", "last": "l", "other": "o"}


def test_a_second_signal_stops_at_once_without_a_traceback(workspace):
    workspace.write_config({"slow": {"content": "s", "slow": "120s", "ignore_stop": True}})
    process = popen_cli(workspace.args("apply", "--auto-approve"), env={"RECONCILER_PLUGINS": TOY_PLUGIN})
    _started(workspace, "slow", process)
    process.send_signal(signal.SIGINT)
    seen = workspace.world / ".stop-seen-slow"
    deadline = time.monotonic() + 30
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen.exists(), "the first signal was not noticed"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err and "Interrupted." in err
    assert workspace.files() == {}
    status, _actions = _last_run(workspace)
    assert status == "interrupted"

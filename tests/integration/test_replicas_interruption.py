"""kill -9 in the middle of a copy, then run again: nothing truncated, everything converges."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from reconciler.state import lock
from reconciler.state.store import StateStore
from tests.conftest import popen_cli
from tests.integration.conftest import make_tree, running_commands, tree


def _rsyncs_writing_to(path) -> list[int]:
    return [pid for pid, argv in running_commands()
            if argv and argv[0].endswith(b"rsync") and any(str(path).encode() in arg for arg in argv)]


@pytest.mark.state_store
def test_kill_9_during_a_copy_then_apply_again(site):
    # Enough data that rsync is still busy when we kill: 300 files of 1 MiB.
    payload = os.urandom(1 << 20)
    make_tree(site.root / "origin", {f"raw/{index:04d}.fits": payload[index:] + payload[:index]
                                     for index in range(300)})
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n')
    process = popen_cli(site.args("reconcile"))
    target = site.root / "backup/exao1/raw"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not target.exists() or len(os.listdir(target)) < 20):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    time.sleep(1)  # rsync is told (PR_SET_PDEATHSIG) that its parent died; give it a moment to stop

    assert not _rsyncs_writing_to(site.root / "backup"), "an orphaned rsync outlived reconciler"

    origin = tree(site.root / "origin")
    copied = tree(site.root / "backup/exao1")
    assert copied, "the kill came too late to test anything"
    for name, content in copied.items():
        if os.path.basename(name).startswith("."):
            continue  # rsync's own temporary names, never a final name
        assert content == origin[name], f"{name} is truncated or corrupt under its final name"

    store = StateStore(site.state_url)
    stale = lock.holder(store)
    store.dispose()
    assert stale is not None and stale.pid == process.pid
    result = site.cli("reconcile")  # no force-unlock: the lock died with its process
    assert result.code == 0, result.err
    final = {name: content for name, content in tree(site.root / "backup/exao1").items()
             if not os.path.basename(name).startswith(".")}
    assert final == origin
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_a_signal_during_a_copy_ends_the_running_batch_cleanly_records_it_and_stops(site):
    """SIGINT to reconciler alone (as a terminal's Ctrl-C reaches it, rsync having a process group
    of its own): the running rsync batch finishes, what it delivered is recorded, no new batch
    starts, the action is 'interrupted' (not failed), exit 130; the next run copies the rest."""
    make_tree(site.root / "origin", {f"raw/{index:04d}.fits": os.urandom(4096) for index in range(400)})
    (site.root / "backup").mkdir()
    # small batches, one at a time, slowed down: the copy is surely running when the signal comes
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\ncopy_jobs = 1\ncopy_batch_files = 40\n'
               'bwlimit = "160KiB"\n')
    process = popen_cli(site.args("reconcile"))
    target = site.root / "backup/exao1/raw"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not target.exists() or len(os.listdir(target)) < 41):
        time.sleep(0.01)
    assert process.poll() is None, "the copy finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "stopped as asked after" in err

    copied = {name for name in os.listdir(target) if not name.startswith(".")}
    assert 41 <= len(copied) < 400 and len(copied) % 40 in (0, 1), len(copied)  # whole batches only
    history = json.loads(site.cli("history", "--json").out)
    copy = [entry for entry in history if entry["kind"] == "copy"]
    assert copy[-1]["status"] == "interrupted" and copy[-1]["run_status"] == "interrupted"
    listed = json.loads(site.cli("replicas", "list", "--json").out)[0]
    assert listed["files"] == len(copied), "every delivered file is recorded"

    again = site.cli("reconcile")
    assert again.code == 0, again.err
    assert len([name for name in os.listdir(target) if not name.startswith(".")]) == 400
    assert site.cli("plan", "--detailed-exitcode").code == 0

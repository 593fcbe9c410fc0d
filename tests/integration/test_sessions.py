"""Live session data management end to end: a generated instance in a real MongoDB wire-protocol
server, real session directories, a real hook script, the real CLI."""

from __future__ import annotations

import getpass
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc.datatypes import collect, total
from reconciler.state import lock
from reconciler.state.store import StateStore
from tests.conftest import popen_cli

HOOK = """#!/bin/sh
echo "$@ $RECONCILER_PROJECT_UID $RECONCILER_SESSION_UID $RECONCILER_DATATYPE $RECONCILER_STATUS" >> "{calls}"
{extra}
"""


@dataclass
class LiveSite:
    site: Any
    mongo: Any
    db: Any
    database: str
    root: Path

    @property
    def calls(self) -> Path:
        return self.site.root / "hook-calls.txt"

    def hook(self, extra: str = "", mode: int = 0o755) -> Path:
        path = self.site.root / "dm-hook.sh"
        path.write_text(HOOK.format(calls=self.calls, extra=extra))
        os.chmod(path, mode)
        return path

    def configure(self, sessions: str, hooks: str | None = None, access: str = "") -> None:
        hook = hooks if hooks is not None else f'[hooks]\ndatatype_state = "{self.hook()}"\n'
        self.site.write(f'[databases.cs]\nuri = "{self.mongo.uri}"\ndatabase = "{self.database}"\n\n'
                        '[instances.cs]\ndatabase = "cs"\ninstance_id = "id-cs"\n\n'
                        f"{sessions}\n{hook}\n{access}\n")

    def session(self, project: str, session: str) -> dict[str, Any]:
        return self.db.workspaces.find_one({"project_uid": project, "session_uid": session})

    def state(self, project: str, session: str, datatype: str) -> dict[str, Any]:
        return self.session(project, session)["data_management"][datatype]

    def session_dir(self, project: str = "P1", session: str = "S1") -> Path:
        return Path(self.session(project, session)["session_dir"])


@pytest.fixture
def live(site, mongo) -> LiveSite:
    client = pymongo.MongoClient(mongo.uri)
    database = f"live_{uuid.uuid4().hex[:8]}"
    make_instance(client[database], site.root / "cs", "id-cs", projects=2, jobs=2, sessions=2, movies=3)
    yield LiveSite(site, mongo, client[database], database, site.root / "cs")
    client.drop_database(database)
    client.close()


@pytest.mark.state_store
def test_state_changes_run_the_hook_and_are_recorded(live):
    live.configure('[sessions."P1/S1"]\nmicrographs = "archiving"\nmetadata = "archived"\n')
    result = live.site.cli("apply", "--auto-approve")
    assert result.code == 0, result.err
    assert live.state("P1", "S1", "micrographs")["status"] == "archiving"
    assert live.state("P1", "S1", "micrographs")["prev_status"] == "active"
    assert live.state("P1", "S1", "metadata")["status"] == "archived"
    calls = sorted(live.calls.read_text().splitlines())
    assert calls == ["P1 S1 metadata archived P1 S1 metadata archived",
                     "P1 S1 micrographs archiving P1 S1 micrographs archiving"]
    log = (live.site.root / "state" / "hooks.log").read_text()
    assert "dm-hook.sh P1 S1 micrographs archiving: exit 0" in log
    # the hook (or a later config change) moves archiving on to archived
    live.configure('[sessions."P1/S1"]\nmicrographs = "archived"\nmetadata = "archived"\n')
    assert live.site.cli("apply", "--auto-approve").code == 0
    assert live.state("P1", "S1", "micrographs") ["prev_status"] == "archiving"
    assert live.site.cli("plan", "--detailed-exitcode").code == 0


def test_deletion_needs_allow_destroy_removes_files_and_never_touches_raw(live):
    directory = live.session_dir()
    raw_before = collect(directory, "raw")
    particles = collect(directory, "particles")
    assert particles and raw_before
    live.configure('[sessions."P1/S1"]\nparticles = "deleted"\nraw = "deleted"\n')
    plan = live.site.cli("plan")
    assert f"delete {len(particles)} files" in plan.out and "delete_data (destructive)" in plan.out
    pending = live.site.cli("apply", "--auto-approve")
    assert all(Path(item.path).exists() for item in particles), "nothing deleted without --allow-destroy"
    assert "--allow-destroy" in pending.out + pending.err
    done = live.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert done.code == 0, done.err
    assert collect(directory, "particles") == []
    assert (directory / "extract").is_dir(), "the folder itself stays"
    assert live.state("P1", "S1", "particles") == {"status": "deleted", "prev_status": "active", "size": 0}
    assert live.state("P1", "S1", "raw")["status"] == "deleted"
    assert collect(directory, "raw") == raw_before, "raw data is never deleted by reconciler"
    assert "P1 S1 particles deleted" in live.calls.read_text()
    again = live.site.cli("plan", "--detailed-exitcode")
    assert again.code == 0 and "reconciler never deletes raw data" in again.out + again.err


def test_deleted_data_cannot_become_active_again(live):
    live.db.workspaces.update_one({"project_uid": "P1", "session_uid": "S1"},
                                  {"$set": {"data_management.micrographs.status": "deleted"}})
    live.configure('[sessions."P1/S1"]\nmicrographs = "active"\nmetadata = "archived"\n')
    result = live.site.cli("apply", "--auto-approve")
    text = result.out + result.err
    assert result.code == 1
    assert "session:P1/S1/micrographs" in text and "cannot become active again" in text
    assert live.state("P1", "S1", "metadata")["status"] == "archived", "the other datatype proceeded"


def test_running_sessions_wait(live):
    assert live.session("P1", "S2")["status"] == "running"
    live.configure('[sessions."P1/S2"]\nmicrographs = "archived"\n\n[sessions."P2/S1"]\nmicrographs = "archived"\n')
    result = live.site.cli("apply", "--auto-approve")
    assert result.code == 0
    assert "waiting: session S2 of P1 is running" in result.out + result.err
    assert live.state("P1", "S2", "micrographs")["status"] == "active"
    assert live.state("P2", "S1", "micrographs")["status"] == "archived"


def test_a_failing_hook_leaves_the_state_unchanged_and_shows_its_output(live):
    live.hook(extra='echo "archive system is down" >&2\nexit 3')
    live.configure('[sessions."P1/S1"]\nmicrographs = "archiving"\n',
                   hooks=f'[hooks]\ndatatype_state = "{live.site.root / "dm-hook.sh"}"\n')
    result = live.site.cli("apply", "--auto-approve")
    assert result.code == 1
    assert "failed with exit 3: archive system is down" in result.out + result.err
    assert live.state("P1", "S1", "micrographs")["status"] == "active"


def test_a_hanging_hook_is_stopped_after_its_timeout(live):
    live.hook(extra="sleep 60")
    live.configure('[sessions."P1/S1"]\nmicrographs = "archived"\n',
                   hooks=f'[hooks]\ndatatype_state = "{live.site.root / "dm-hook.sh"}"\ntimeout = "1s"\n')
    started = time.monotonic()
    result = live.site.cli("apply", "--auto-approve")
    assert time.monotonic() - started < 30
    assert result.code == 1 and "did not finish within 1s and was stopped" in result.out + result.err
    assert live.state("P1", "S1", "micrographs")["status"] == "active"


@pytest.mark.parametrize("problem", ["missing", "not executable"])
def test_a_broken_hook_is_an_error_for_each_change_in_the_plan(live, problem):
    path = live.site.root / "dm-hook.sh"
    if problem == "not executable":
        live.hook(mode=0o644)
    live.configure('[sessions."P1/S1"]\nmicrographs = "archived"\n', hooks=f'[hooks]\ndatatype_state = "{path}"\n')
    result = live.site.cli("plan")
    assert result.code == 1
    assert "session:P1/S1/micrographs" in result.out and (
        "does not exist" if problem == "missing" else "is not executable") in result.out


@pytest.mark.state_store
def test_a_hook_failing_after_a_deletion_runs_again_next_time(live):
    live.hook(extra="exit 1")
    live.configure('[sessions."P1/S1"]\nparticles = "deleted"\n',
                   hooks=f'[hooks]\ndatatype_state = "{live.site.root / "dm-hook.sh"}"\n')
    failed = live.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert failed.code == 1 and "the next run runs the hook again" in failed.out + failed.err
    assert live.state("P1", "S1", "particles")["status"] == "deleted"
    live.hook()
    plan = live.site.cli("plan")
    assert "+ hook:" in plan.out
    assert live.site.cli("apply", "--auto-approve").code == 0
    calls = [line for line in live.calls.read_text().splitlines() if line.startswith("P1 S1 particles deleted")]
    assert len(calls) == 2  # the failed run, then the successful re-run
    assert live.site.cli("plan", "--detailed-exitcode").code == 0


def test_only_datatype_admins_may_apply(live):
    live.configure('[sessions."P1/S1"]\nmicrographs = "archived"\n', access='[access]\ndatatype_admins = ["alice"]\n')
    assert live.site.cli("plan").code == 0, "everyone may plan"
    refused = live.site.cli("apply", "--auto-approve")
    assert refused.code == 1 and f"user {getpass.getuser()} may not change datatype states" in refused.out + refused.err
    assert live.state("P1", "S1", "micrographs")["status"] == "active"
    live.configure('[sessions."P1/S1"]\nmicrographs = "archived"\n',
                   access=f'[access]\ndatatype_admins = ["alice", "{getpass.getuser()}"]\n')
    assert live.site.cli("apply", "--auto-approve").code == 0


def test_config_errors_for_thumbnails_unknown_datatypes_and_sessions(live):
    live.configure('[sessions."P1/S1"]\nthumbnails = "deleted"\n')
    result = live.site.cli("validate")
    assert result.code == 1 and "thumbnails have no state of their own" in result.err
    live.configure('[sessions."P1/S1"]\nmicrograph = "archived"\n')
    result = live.site.cli("validate")
    assert result.code == 1 and "unknown key 'micrograph'" in result.err and "did you mean 'micrographs'" in result.err
    assert "reconciler.toml:" in result.err
    live.configure('[sessions."P1/S9"]\nmicrographs = "archived"\n\n[sessions."P2/S1"]\nmetadata = "archived"\n')
    result = live.site.cli("apply", "--auto-approve")
    assert result.code == 1 and "session:P1/S9/micrographs: no Live session S9 in P1" in result.out
    assert live.state("P2", "S1", "metadata")["status"] == "archived"


def test_unreadable_session_files_are_an_error_for_that_datatype(live):
    if os.geteuid() == 0:
        pytest.skip("root reads everything; an unreadable directory cannot be made here")
    directory = live.session_dir() / "extract"
    os.chmod(directory, 0)
    try:
        live.configure('[sessions."P1/S1"]\nparticles = "archived"\nmetadata = "archived"\n')
        result = live.site.cli("apply", "--auto-approve")
        assert result.code == 1 and "session:P1/S1/particles: cannot read" in result.out
        assert live.state("P1", "S1", "metadata")["status"] == "archived"
    finally:
        os.chmod(directory, 0o755)


def test_kill_9_during_a_deletion_is_finished_by_the_next_run(live):
    extract = live.session_dir() / "extract"
    for index in range(20000):
        (extract / f"p{index:05d}.mrc").write_bytes(b"x")
    live.configure('[sessions."P1/S1"]\nparticles = "deleted"\n')
    process = popen_cli(live.site.args("apply", "--auto-approve", "--allow-destroy"))
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if len(os.listdir(extract)) < 19000:
            break
        time.sleep(0.002)
    assert process.poll() is None, "the deletion finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    remaining = len(os.listdir(extract))
    assert remaining > 0
    assert live.state("P1", "S1", "particles")["status"] == "active", "never 'deleted' while files remain"
    store = StateStore(live.site.state_url)
    stale = lock.holder(store)
    store.dispose()
    assert stale is not None and stale.pid == process.pid  # its row only: the lock died with its process
    plan = live.site.cli("plan")
    assert f"delete {remaining:,} files" in plan.out
    assert live.site.cli("apply", "--auto-approve", "--allow-destroy").code == 0
    assert os.listdir(extract) == [] and live.state("P1", "S1", "particles")["status"] == "deleted"


def test_stats_and_file_lists(live):
    live.configure("")
    result = live.site.cli("sessions", "stats", "P1", "--refresh", "--json")
    assert result.code == 0, result.err
    stats = json.loads(result.out)
    assert [row["session_uid"] for row in stats["sessions"]] == ["S1", "S2"]
    directory = live.session_dir()
    files, size = total(collect(directory, "micrographs"))
    s1 = stats["sessions"][0]["datatypes"]
    assert s1["micrographs"] == {"status": "active", "bytes": size, "files": files}
    assert s1["thumbnails"]["status"] is None
    assert stats["totals"]["micrographs"]["files"] == sum(
        row["datatypes"]["micrographs"]["files"] for row in stats["sessions"])
    assert live.state("P1", "S1", "micrographs")["size"] == size, "--refresh stores the sizes in the session"
    table = live.site.cli("sessions", "stats", "P1")
    assert table.code == 0 and "S1" in table.out and "total" in table.out

    listed = json.loads(live.site.cli("sessions", "files", "P1/S1", "micrographs", "--json").out)
    assert [entry["path"] for entry in listed] == [item.path for item in collect(directory, "micrographs")]
    raw = json.loads(live.site.cli("sessions", "files", "P1/S1", "raw", "--json").out)
    assert any(entry["link"] for entry in raw) and any(not entry["link"] for entry in raw)
    grouped = json.loads(live.site.cli("sessions", "files", "P1", "--json").out)
    assert set(grouped["sessions"]) == {"S1", "S2"}
    assert set(grouped["sessions"]["S1"]) == {"raw", "micrographs", "thumbnails", "particles", "metadata"}
    bad = live.site.cli("sessions", "files", "P1/S1", "movies")
    assert bad.code == 1 and "unknown datatype 'movies'; valid: raw, micrographs" in bad.err


def test_kill_9_during_the_hook_after_a_deletion_runs_the_hook_next_time(live):
    """The hook of a deletion is owed from the moment the state says deleted: a run killed while
    the hook runs leaves it owed, and the next run runs it."""
    release = live.site.root / "release-hook"
    started = live.site.root / "hook-started"
    live.hook(extra=f'touch "{started}"\nwhile [ ! -e "{release}" ]; do sleep 0.05; done')
    live.configure('[sessions."P1/S1"]\nparticles = "deleted"\n', hooks=f'[hooks]\ndatatype_state = '
                   f'"{live.site.root / "dm-hook.sh"}"\ntimeout = "2m"\n')
    process = popen_cli(live.site.args("apply", "--auto-approve", "--allow-destroy"))
    deadline = time.monotonic() + 60
    while process.poll() is None and not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.exists() and process.poll() is None, "the hook did not start"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    release.touch()  # the orphaned hook may finish now; its run was never confirmed
    assert live.state("P1", "S1", "particles")["status"] == "deleted"
    plan = live.site.cli("plan")  # the killed run's lock died with it: nothing to unlock
    assert "hook:" in plan.out and "has not completed" in plan.out, plan.out
    again = live.site.run("reconcile", "--allow-destroy")
    assert again.code == 0, again.err
    assert live.calls.read_text().splitlines().count("P1 S1 particles deleted P1 S1 particles deleted") == 2
    assert live.site.cli("plan", "--detailed-exitcode").code == 0


def test_a_hook_that_prints_a_lot_is_streamed_to_the_log_with_a_cap(live):
    from reconciler.kinds.sessions.hook import LOG_CAP

    # 8 MiB of output, then a last line and a failure: the log keeps the first LOG_CAP bytes,
    # the error shows the end
    hook = live.hook(extra='head -c 8388608 /dev/zero | tr "\\0" "y"\necho\necho "the real reason"\nexit 4')
    live.configure('[sessions."P1/S1"]\nmicrographs = "archiving"\n', hooks=f'[hooks]\ndatatype_state = "{hook}"\n')
    result = live.site.cli("apply", "--auto-approve")
    assert result.code == 1 and "the real reason" in result.out + result.err
    log = live.site.root / "state" / "hooks.log"
    assert LOG_CAP < log.stat().st_size < LOG_CAP + 4096
    text = log.read_text()
    assert "[output cut after" in text and "micrographs archiving: exit 4" in text
    assert live.state("P1", "S1", "micrographs")["status"] == "active"

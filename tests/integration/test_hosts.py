"""Several hosts, one PostgreSQL state: real reconciler processes, each in a UTS and PID namespace
of its own (``unshare``) with its own host name, against the PostgreSQL on 127.0.0.1:5432.

A run is held inside its copy by a wrapper of the real rsync that says it started (a file) and
waits for the test's go-ahead (a file): no sleeps, no timing windows; every wait polls with a
generous deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import make_tree, tree

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)]

DEADLINE = 120.0

RSYNC_WRAPPER = """#!/bin/sh
# rsync as the test sees it: on a host named in $HOLD_HOSTS, say so, then wait for go-<host>.
host=$(hostname)
echo "start $host" >> "$HOLD_DIR/log"
case " $HOLD_HOSTS " in
  *" $host "*)
    touch "$HOLD_DIR/started-$host"
    tries=0
    while [ ! -e "$HOLD_DIR/go-$host" ]; do
      tries=$((tries + 1))
      [ "$tries" -gt 2400 ] && { echo "no go-ahead for $host" >&2; exit 99; }
      sleep 0.05
    done ;;
esac
"$REAL_RSYNC" "$@"
code=$?
echo "end $host" >> "$HOLD_DIR/log"
exit $code
"""


def _unshare_works() -> str | None:
    """Why separate host namespaces cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "no unshare program (util-linux)"
    probe = subprocess.run(["unshare", "--uts", "--pid", "--fork", "sh", "-c", "hostname probe-host && hostname"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "probe-host":
        return f"unshare --uts --pid cannot make a host of its own here ({probe.stderr.strip() or probe.stdout})"
    return None


_NO_HOSTS = _unshare_works()


@dataclass
class Host:
    """A reconciler process on a host of its own (a namespace with its own name)."""

    name: str
    process: subprocess.Popen[bytes]
    err_path: Path
    out_path: Path

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self) -> int:
        return self.process.wait(DEADLINE)

    def kill_namespace(self) -> None:
        """kill -9 of the whole host: unshare dies, and with it (--kill-child) the namespace's
        first process, which takes every process of the namespace with it."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(DEADLINE)


@dataclass
class Cluster:
    root: Path
    state_url: str

    @property
    def hold(self) -> Path:
        return self.root / "hold"

    @property
    def config(self) -> Path:
        return self.root / "reconciler.toml"

    def env(self, hold_hosts: str = "") -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}",
                "HOLD_DIR": str(self.hold), "HOLD_HOSTS": hold_hosts, "REAL_RSYNC": shutil.which("rsync") or "rsync"}

    def start(self, host: str, *command: str, hold_hosts: str = "") -> Host:
        err_path, out_path = self.root / f"{host}-{len(list(self.root.glob('*.err')))}.err", self.root / f"{host}.out"
        environment = self.env(hold_hosts)
        environment.pop("RECONCILER_HOST", None)  # the namespace's own name, not an override
        with err_path.open("wb") as err, out_path.open("wb") as out:
            process = subprocess.Popen(
                ["unshare", "--uts", "--pid", "--fork", "--kill-child", "sh", "-c", 'hostname "$1"; shift; exec "$@"',
                 "sh", host, sys.executable, "-m", "reconciler", "--config", str(self.config),
                 "--state", self.state_url, *command],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=environment)
        return Host(host, process, err_path, out_path)

    def run(self, host: str, *command: str) -> tuple[int, str, str]:
        started = self.start(host, *command)
        code = started.wait()
        return code, started.out(), started.err()

    def log(self) -> list[str]:
        path = self.hold / "log"
        return path.read_text().split("\n")[:-1] if path.exists() else []


def _waiting_for_exao1(err: str) -> bool:
    return any("waiting up to 300 s for the lock held by " in line and "@exao1 (pid " in line
               for line in err.splitlines())


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path, state_url: str) -> Iterator[Cluster]:
    if _NO_HOSTS:
        pytest.skip(_NO_HOSTS)
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "rsync"
    wrapper.write_text(RSYNC_WRAPPER)
    wrapper.chmod(0o755)
    (tmp_path / "hold").mkdir()
    yield Cluster(tmp_path, state_url)


TWO_INSTRUMENT_HOSTS = """\
[origins.o1]
root = "o1"
host = "exao1"
local_only = true
settle = "0s"

[origins.o2]
root = "o2"
host = "exao2"
local_only = true
settle = "0s"

[replicas."r1"]
origins = ["o1"]

[replicas."r2"]
origins = ["o2"]
"""

ONE_ORIGIN = """\
[origins.o]
root = "o"
settle = "0s"

[replicas."r"]
"""


def _trees(cluster: Cluster, *names: str) -> None:
    for name in names:
        make_tree(cluster.root / name, {"telem/a.bin": f"{name} alpha", "cam/b.fits": f"{name} beta"})
    for replica in ("r", "r1", "r2"):
        (cluster.root / replica).mkdir(exist_ok=True)


def test_two_hosts_with_disjoint_origins_reconcile_at_once_and_both_finish(cluster):
    _trees(cluster, "o1", "o2")
    cluster.config.write_text(TWO_INSTRUMENT_HOSTS)
    first = cluster.start("exao1", "reconcile", hold_hosts="exao1 exao2")
    second = cluster.start("exao2", "reconcile", hold_hosts="exao1 exao2")
    try:
        # Both inside their copy at the same moment: neither waited for the other's lock.
        _until(lambda: (cluster.hold / "started-exao1").exists() and (cluster.hold / "started-exao2").exists(),
               "both hosts copying at once")
    finally:
        (cluster.hold / "go-exao1").touch()
        (cluster.hold / "go-exao2").touch()
    assert first.wait() == 0, first.err()
    assert second.wait() == 0, second.err()
    assert tree(cluster.root / "r1" / "o1") == tree(cluster.root / "o1")
    assert tree(cluster.root / "r2" / "o2") == tree(cluster.root / "o2")
    assert not (cluster.root / "r1" / "o2").exists() and not (cluster.root / "r2" / "o1").exists()
    # Each says what it left to the other host: never a silent "all good".
    assert "not checked by this run on exao1: origin o2 is local_only on host exao2" in first.err()
    assert "not checked by this run on exao2: origin o1 is local_only on host exao1" in second.err()
    assert "locked" not in first.err() + second.err()

    code, out, _err = cluster.run("exao1", "plan", "--detailed-exitcode")
    assert code == 0 and "origin:o2" in out and "local_only on host exao2" in out  # nothing to do here...
    assert "Everything matches" not in out  # ...but a note on what it did not check, not silence
    history = json.loads(cluster.run("backup1", "history", "--json")[1])
    assert {(row["address"], row["host"], row["status"]) for row in history} == {
        ("replica:r1", "exao1", "succeeded"), ("replica:r2", "exao2", "succeeded")}


def test_two_hosts_copying_to_one_replica_take_turns(cluster):
    _trees(cluster, "o")
    cluster.config.write_text(ONE_ORIGIN)
    first = cluster.start("exao1", "reconcile", hold_hosts="exao1")
    try:
        _until(lambda: (cluster.hold / "started-exao1").exists(), "exao1 copying")
        code, _out, err = cluster.run("exao2", "reconcile")  # no --lock-timeout: fails at once, naming the holder
        assert code == 1, err
        assert "replica:r is locked by " in err and "@exao1 (pid " in err and ", reconcile since " in err, err
        assert "which is still running" in err
        second = cluster.start("exao2", "reconcile", "--lock-timeout", "5m")
        _until(lambda: _waiting_for_exao1(second.err()), "exao2 waiting")
        assert second.process.poll() is None
    finally:
        (cluster.hold / "go-exao1").touch()
    assert first.wait() == 0, first.err()
    assert second.wait() == 0, second.err()
    # exao2 planned again under the lock and found exao1's copies: it copied nothing.
    assert cluster.log() and {line.split()[1] for line in cluster.log()} == {"exao1"}  # (one rsync per batch)
    assert "planning again" in second.err()
    assert tree(cluster.root / "r" / "o") == tree(cluster.root / "o")


def test_kill_9_of_a_host_frees_its_locks_at_once_for_the_other(cluster):
    _trees(cluster, "o")
    cluster.config.write_text(ONE_ORIGIN)
    first = cluster.start("exao1", "reconcile", hold_hosts="exao1")
    _until(lambda: (cluster.hold / "started-exao1").exists(), "exao1 copying")
    second = cluster.start("exao2", "reconcile", "--lock-timeout", "5m")
    try:
        _until(lambda: _waiting_for_exao1(second.err()), "exao2 waiting")
        first.kill_namespace()  # reconciler, its rsync and everything else on "exao1" die at once
    finally:
        (cluster.hold / "go-exao1").touch()
    assert second.wait() == 0, second.err()
    assert "took over the lock of " in second.err() and "@exao1 (pid " in second.err()
    assert tree(cluster.root / "r" / "o") == tree(cluster.root / "o")
    history = json.loads(cluster.run("exao2", "history", "--json")[1])
    assert {(row["host"], row["status"], row["run_status"]) for row in history} == {
        ("exao1", "interrupted", "interrupted"), ("exao2", "succeeded", "succeeded")}
    assert cluster.run("exao1", "plan", "--detailed-exitcode")[0] == 0


def test_a_plan_on_one_host_sees_what_another_host_recorded(cluster):
    _trees(cluster, "o")
    cluster.config.write_text(ONE_ORIGIN)
    code, _out, err = cluster.run("exao1", "reconcile")
    assert code == 0, err
    code, out, err = cluster.run("exao2", "plan", "--detailed-exitcode")
    assert code == 0, out + err  # exao1's copy records are exao2's too: nothing to copy again
    assert "No changes. Everything matches the configuration." in out
    listed = json.loads(cluster.run("exao2", "replicas", "list", "--json")[1])
    assert [(row["address"], row["files"]) for row in listed] == [("replica:r", 2)]
    code, out, _err = cluster.run("exao2", "history")
    assert code == 0 and " exao1 succeeded copy replica:r" in out

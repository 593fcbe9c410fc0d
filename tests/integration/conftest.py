"""Real parts for integration tests: an sshd on 127.0.0.1, data trees, a replicas workspace."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliWorkspace, Result, run_cli
from tests.integration.mongod import INSTALL, find_mongod, running_mongod
from tests.integration.sshd import Sshd, running_sshd
from tests.integration.sshd import available as sshd_available


@contextmanager
def sshd_or_skip(home: Path, extra_config: str = "") -> Iterator[Sshd]:
    """A real sshd (see ``running_sshd``), or the test skipped where none is installed."""
    if not sshd_available():
        pytest.skip("sshd not installed (apt-get install openssh-server); .ci/run installs it")
    with running_sshd(home, extra_config) as server:
        yield server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd_or_skip(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def running_commands() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process running now (read from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                argv = stream.read().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        yield int(pid), argv


def make_tree(root: Path, files: dict[str, bytes | str], age_seconds: float = 3600) -> None:
    """Create files (parents too) with an mtime ``age_seconds`` in the past (settled by default)."""
    stamp = time.time() - age_seconds
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        os.utime(path, (stamp, stamp))


def make_worker(root: Path) -> Path:
    """A CryoSPARC worker directory under ``root`` whose bin/cryosparcw runs (and does nothing)."""
    worker = root / "cryosparc_worker"
    (worker / "bin").mkdir(parents=True)
    program = worker / "bin" / "cryosparcw"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return worker


def rewrite_in_place(path: Path, content: str, age_seconds: float) -> None:
    """Rewrite a file as an in-place write does (new content, an mtime ``age_seconds`` ago),
    its directory's mtime left as it was: the change the immutable fast path cannot see."""
    directory = path.parent.stat()
    path.write_text(content)
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    os.utime(path.parent, ns=(directory.st_atime_ns, directory.st_mtime_ns))


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (skipping rsync's partial dir), by relative path, with its content."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name != ".rsync-partial"]
        for name in filenames:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


@dataclass
class Site(CliWorkspace):
    """A replicas config, its data trees and its state database."""

    def write(self, text: str) -> None:
        self.config.write_text(text)

    def run(self, *command: str, env: dict[str, str] | None = None) -> Result:
        return run_cli(self.args(*command), env=env)


@pytest.fixture
def site(tmp_path: Path, state_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Site:
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    return Site(tmp_path, state_url, capsys)


@dataclass(frozen=True)
class MongoServer:
    """A real MongoDB server on 127.0.0.1 (never an imitation: they hid data loss)."""

    uri: str
    implementation: str  # "mongod" or "external"
    replica_set: bool = False


def _mongod_or_fail() -> str:
    mongod = find_mongod()
    if mongod is None:
        pytest.fail(f"no MongoDB server for the MongoDB tests: {INSTALL}, put a mongod on PATH, "
                    "or set RECONCILER_TEST_MONGO_URI", pytrace=False)
    return mongod


def _is_replica_set(uri: str) -> bool:
    import pymongo

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        return bool(client.admin.command("hello").get("setName"))


@pytest.fixture(scope="session")
def mongo() -> Iterator[MongoServer]:
    """A standalone mongod (or the server RECONCILER_TEST_MONGO_URI names)."""
    external = os.environ.get("RECONCILER_TEST_MONGO_URI")
    if external:
        yield MongoServer(external, "external", _is_replica_set(external))
        return
    with running_mongod(_mongod_or_fail()) as uri:
        yield MongoServer(uri, "mongod")


@pytest.fixture
def client(mongo: MongoServer) -> Iterator[Any]:
    """A pymongo client of the test server, closed afterwards."""
    import pymongo

    connection: Any = pymongo.MongoClient(mongo.uri)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def mongo_rs() -> Iterator[MongoServer]:
    """A single-node replica set (RECONCILER_TEST_MONGO_URI when that is one)."""
    external = os.environ.get("RECONCILER_TEST_MONGO_URI")
    if external and _is_replica_set(external):
        yield MongoServer(external, "external", True)
        return
    with running_mongod(_mongod_or_fail(), replica_set="rs0") as uri:
        yield MongoServer(uri, "mongod", True)

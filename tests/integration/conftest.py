"""Real parts for integration tests: an sshd on 127.0.0.1, data trees, a replicas workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CliWorkspace, Result, run_cli
from tests.integration.sshd import Sshd, free_port, running_sshd
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
    """A MongoDB wire-protocol server on 127.0.0.1: a real mongod when there is one, else nx-27017."""

    uri: str
    implementation: str  # "mongod", "external" or "nx-27017"

    @property
    def full_bson(self) -> bool:
        """nx-27017 keeps documents as JSON: it refuses or rewrites some BSON types and renames indexes."""
        return self.implementation != "nx-27017"


@pytest.fixture(scope="session")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    external = os.environ.get("RECONCILER_TEST_MONGO_URI")
    if external:
        yield MongoServer(external, "external")
        return
    port = free_port()
    mongod = shutil.which("mongod")
    if mongod:
        data = tmp_path_factory.mktemp("mongod")
        argv = [mongod, "--dbpath", str(data), "--bind_ip", "127.0.0.1", "--port", str(port), "--quiet"]
        implementation = "mongod"
    else:
        import importlib.util

        if importlib.util.find_spec("nx_27017") is None:
            pytest.skip("no MongoDB server: install mongod, set RECONCILER_TEST_MONGO_URI, or pip install nx-27017")
        data = tmp_path_factory.mktemp("nx")
        # run through this interpreter: pip's script directory need not be on PATH
        argv = [sys.executable, "-c", "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
                "--data-dir", str(data), "--host", "127.0.0.1", "-p", str(port),
                "--pid-file", str(data / "nx.pid"), "--log-file", str(data / "nx.log")]
        implementation = "nx-27017"
    # stderr goes to a file: a pipe nobody reads fills up (64 KiB of nx-27017's warnings)
    # and then blocks the server in the middle of a request.
    stderr_path = tmp_path_factory.mktemp("mongo-stderr") / "stderr.log"
    stderr = open(stderr_path, "wb")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    import pymongo

    while True:
        try:
            pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=500).admin.command("ping")
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                output = stderr_path.read_text(errors="replace")
                raise RuntimeError(f"{implementation} did not start: {output[-2000:]}") from None
            time.sleep(0.2)
    yield MongoServer(f"mongodb://127.0.0.1:{port}", implementation)
    process.terminate()
    process.wait(20)
    stderr.close()

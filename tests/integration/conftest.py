"""Real parts for integration tests: an sshd on 127.0.0.1, data trees, a replicas workspace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CliWorkspace, Result, run_cli

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sshd:
    """A real sshd on 127.0.0.1 accepting one key for the current user."""

    port: int
    user: str
    identity: Path
    options: list[str]

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def toml(self) -> str:
        quoted = ", ".join(f'"{option}"' for option in self.options)
        return f'[ssh]\nidentity_file = "{self.identity}"\noptions = [{quoted}]\nconnect_timeout = "5s"\n'


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if SSHD is None or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd not installed (apt-get install openssh-server); .ci/run installs it")
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    os.chmod(home / "authorized_keys", 0o600)
    port = _free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    log = open(home / "sshd.log", "wb")  # a file, not a pipe nobody reads (a full pipe blocks sshd)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")],
                               stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError as error:
            if process.poll() is not None:
                output = (home / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd did not start: {output}") from error
            time.sleep(0.1)
    options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR",
               f"IdentityFile={home / 'client_key'}"]
    import getpass

    yield Sshd(port=port, user=getpass.getuser(), identity=home / "client_key", options=options)
    process.terminate()
    process.wait(10)
    log.close()


def make_tree(root: Path, files: dict[str, bytes | str], age_seconds: float = 3600) -> None:
    """Create files (parents too) with an mtime ``age_seconds`` in the past (settled by default)."""
    stamp = time.time() - age_seconds
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        os.utime(path, (stamp, stamp))


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
    port = _free_port()
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

"""A real sshd on 127.0.0.1, started as the current user with keys of its own: for the
integration tests (a fixture) and for benchmarks that measure work over ssh. Standard
library only."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def free_port() -> int:
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
    log: Path

    def logins(self) -> int:
        """How many ssh connections this server has authenticated so far (from its log)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def toml(self, port_option: bool = False) -> str:
        """The [ssh] table for this server; ``port_option`` adds its port as an option, for hosts
        named without one (a CryoSPARC target's ssh string, "user@host")."""
        options = [*self.options, f"Port={self.port}"] if port_option else self.options
        quoted = ", ".join(f'"{option}"' for option in options)
        return f'[ssh]\nidentity_file = "{self.identity}"\noptions = [{quoted}]\nconnect_timeout = "5s"\n'

    def command(self) -> list[str]:
        """``ssh`` with this server's options, up to the destination (add a remote command)."""
        options = [part for option in self.options for part in ("-o", option)]
        return ["ssh", *options, "-p", str(self.port), f"{self.user}@127.0.0.1"]


def available() -> bool:
    return SSHD is not None and shutil.which("ssh-keygen") is not None


@contextmanager
def running_sshd(home: Path, extra_config: str = "") -> Iterator[Sshd]:
    """Start sshd with its keys and config in ``home`` (an empty directory), plus
    ``extra_config`` lines of sshd_config; stop it after. It logs each login."""
    assert SSHD is not None
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    os.chmod(home / "authorized_keys", 0o600)
    port = free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nLogLevel INFO\nMaxStartups 100\n" + extra_config
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    log = open(home / "sshd.log", "wb")  # noqa: SIM115 - a file, not a pipe nobody reads (a full pipe blocks sshd)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")],
                               stdout=subprocess.DEVNULL, stderr=log)
    try:
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
        yield Sshd(port=port, user=getpass.getuser(), identity=home / "client_key", options=options,
                   log=home / "sshd.log")
    finally:
        process.terminate()
        process.wait(10)
        log.close()

"""Where an origin or replica lives: a local path or ``ssh://[user@]host[:port]/abs/path``,
and the ssh argument lists to reach it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PERSIST_SECONDS = 60  # a master's life without sessions, should reconciler die without closing it


@dataclass(frozen=True)
class SshSettings:
    """How to run ssh: ``-F`` file, identity, extra ``-o`` options, connect timeout (seconds),
    and whether calls share one connection per host (``control_dir``: where the sockets are,
    set by ``connections.shared`` for the run)."""

    config_file: str | None = None
    identity_file: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout: int = 10
    share_connections: bool = False
    control_dir: str | None = None

    def base_args(self) -> list[str]:
        """ssh options shared by every call (never prompting: BatchMode)."""
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.config_file:
            args[:0] = ["-F", self.config_file]
        if self.identity_file:
            args += ["-i", self.identity_file]
        for option in self.options:
            args += ["-o", option]
        if self.control_dir:
            # After the operator's options: ssh keeps the first value given, so theirs win.
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C",
                     "-o", f"ControlPersist={PERSIST_SECONDS}"]
        return args


@dataclass(frozen=True)
class Location:
    """A local directory (``host`` is None) or a directory on an ssh host."""

    path: str
    host: str | None = None
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Location:
        """Parse a config key or root.

        Raises ValueError for URLs that are not ssh:// or lack an absolute path.
        """
        if "://" not in text:
            return cls(path=text.rstrip("/") or "/")
        parts = urlsplit(text)
        if parts.scheme != "ssh":
            raise ValueError(f"unsupported URL scheme '{parts.scheme}://' in {text!r}; use a local path or ssh://host/path")
        if not parts.hostname:
            raise ValueError(f"no host in {text!r}; write ssh://[user@]host[:port]/absolute/path")
        if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
            raise ValueError(f"the host or user in {text!r} starts with '-', which ssh would take for an option")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"the path in {text!r} must be absolute: ssh://host/absolute/path")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in {text!r}") from None
        return cls(path=path.rstrip("/") or "/", host=parts.hostname, user=parts.username, port=port)

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    @property
    def destination(self) -> str:
        """``[user@]host`` for ssh."""
        assert self.host is not None
        return f"{self.user}@{self.host}" if self.user else self.host

    def rsync_spec(self, subpath: str = "") -> str:
        """This location (plus ``subpath``) as rsync names it: ``/a/b/`` or ``user@host:/a/b/``.

        rsync >= 3.2.4 passes remote paths to the remote side without word-splitting
        (protect-args is the default), so no shell quoting is added here.
        """
        path = self.path.rstrip("/") + ("/" + subpath.strip("/") if subpath else "") + "/"
        return f"{self.destination}:{path}" if self.is_remote else path

    def _ssh(self, settings: SshSettings) -> list[str]:
        """``ssh`` with our options and this location's port."""
        args = ["ssh", *settings.base_args()]
        return args + ["-p", str(self.port)] if self.port else args

    def ssh_args(self, settings: SshSettings) -> list[str]:
        """``ssh`` argv up to and including the destination (no remote command)."""
        return [*self._ssh(settings), "--", self.destination]

    def rsync_shell(self, settings: SshSettings) -> str:
        """The ``-e`` value for rsync: ssh with our options (rsync splits it on spaces itself)."""
        return " ".join(shlex.quote(arg) for arg in self._ssh(settings))

    def __str__(self) -> str:
        if not self.is_remote:
            return self.path
        port = f":{self.port}" if self.port else ""
        return f"ssh://{self.destination}{port}{self.path}"

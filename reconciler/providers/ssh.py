"""ssh connection sharing: one ssh connection per host (and per ``[ssh]`` settings) for a
whole run.

Without it every ssh call of a run logs in anew: the replica probe, the one or two
listings of an origin, every rsync batch. That is about 0.2 s of key exchange and
authentication each on loopback (more across a network, and a line in the remote host's
auth log each time). With ``[ssh] share_connections`` on (the default) the first call to a
host becomes ssh's ControlMaster and later calls open sessions inside its connection.

The control sockets live in a directory of this process (mode 0700, from ``mkdtemp``).
When the process exits the masters are told to exit and the directory is removed; should
the process die first (kill -9), each master exits by itself after
``location.PERSIST_SECONDS`` without sessions. A server that refuses more sessions
(``MaxSessions 1``) makes ssh fall back to a connection of its own, so sharing never makes
a call fail.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import replace

import sh

from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import EVERY_EXIT

# A unix socket's path has at most 107 bytes. ssh names the socket "<dir>/<%C: 40 hex>" and
# binds it first as that plus ".<16 random characters>", so the directory gets at most 49.
MAX_DIRECTORY_LENGTH = 107 - 1 - 40 - 17
PREFIX = "reconciler-ssh-"

_directories: dict[SshSettings, str] = {}
_lock = threading.Lock()


def shared(settings: SshSettings, locations: Iterable[Location]) -> SshSettings:
    """``settings`` with this process's control directory for them, when sharing is on and
    some of ``locations`` is reached over ssh (a run without ssh makes no directory).

    Equal settings share a directory, different ones (another key, other options) do not,
    so a connection is never reused for settings it was not opened with. When no short
    enough temporary directory can be made, ssh runs unshared, as with sharing off.
    """
    if not settings.share_connections or settings.control_dir:
        return settings
    if not any(location.is_remote for location in locations):
        return settings
    with _lock:
        directory = _directories.get(settings)
        if directory is None:
            directory = _make_directory()
            if directory is None:
                return settings
            if not _directories:
                atexit.register(close_all)
            _directories[settings] = directory
    return replace(settings, control_dir=directory)


def _make_directory() -> str | None:
    for parent in (tempfile.gettempdir(), "/tmp"):
        if len(parent) + 1 + len(PREFIX) + 8 > MAX_DIRECTORY_LENGTH or not os.path.isdir(parent):
            continue
        try:
            return tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        except OSError:
            continue
    return None


def close_all() -> None:
    """Tell every master this process started to exit, and remove the control directories."""
    with _lock:
        directories = list(_directories.values())
        _directories.clear()
    ssh = shutil.which("ssh")
    for directory in directories:
        try:
            sockets = [os.path.join(directory, name) for name in os.listdir(directory)]
        except OSError:
            sockets = []
        for socket in sockets:
            if ssh:
                # -F /dev/null: the operator's ssh_config has no say in telling a master to exit;
                # the host name is required by the syntax and not looked up. (No _timeout: sh
                # then polls for it every 0.1 s, which cost each run 0.1 s; the master is ours,
                # on this host, and answers at once.)
                with contextlib.suppress(OSError):  # nothing to tell at exit; the master leaves by itself
                    sh.Command(ssh)("-F", "/dev/null", "-o", f"ControlPath={socket}", "-O", "exit", "reconciler",
                                    _ok_code=EVERY_EXIT, _in=b"")
        shutil.rmtree(directory, ignore_errors=True)

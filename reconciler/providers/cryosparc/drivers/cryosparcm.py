"""The ``cryosparcm`` driver: the same project operations through a real CryoSPARC
installation's command line, ``cryosparcm cli "<function>(<arguments>)"``.

It cannot run here (no CryoSPARC installation); the argument lists are built by
pure functions and unit-tested against the call signatures of the CryoSPARC v4 CLI
reference:

- ``archive_project(project_uid)``
- ``unarchive_project(project_uid, abs_path_export_project_dir)``
- ``detach_project(project_uid)``
- ``attach_project(owner_user_id, abs_path_export_project_dir)`` -> the new project uid
- ``update_project_directory(project_uid, new_project_dir)``
- ``update_project(project_uid, attrs)`` (to record ``imported_from``)
- ``cryosparcm backup --dir=<directory> --file=<name>``

Arguments are written as Python literals (``repr``), never spliced into a shell
string: the program runs as an argument list.
"""

from __future__ import annotations

import re
from typing import Any

import sh

from reconciler.errors import ApplyError, ToolMissingError

_PROJECT_UID = re.compile(r"\bP[1-9][0-9]*\b")


def cli_call(function: str, *arguments: Any) -> str:
    """``archive_project('P12')``: a call expression with every argument as a Python literal."""
    if not re.fullmatch(r"[a-z_]+", function):
        raise ValueError(f"not a cryosparcm cli function name: {function!r}")
    return f"{function}({', '.join(repr(argument) for argument in arguments)})"


def cli_argv(cryosparcm: str, function: str, *arguments: Any) -> list[str]:
    return [cryosparcm, "cli", cli_call(function, *arguments)]


def backup_argv(cryosparcm: str, directory: str, name: str) -> list[str]:
    """``cryosparcm backup``: the database dumped into ``directory/name``."""
    return [cryosparcm, "backup", f"--dir={directory}", f"--file={name}"]


class CryosparcmDriver:
    """Runs ``cryosparcm cli`` for each operation; reads (busy jobs, documents) go to the database."""

    def __init__(self, reader: Any, name: str, instance_id: str, cryosparcm: str = "cryosparcm",
                 owner_user_id: str | None = None):
        self.reader = reader  # a MongoDriver used only for reads
        self.name = name
        self.instance_id = instance_id
        self.cryosparcm = cryosparcm
        self.owner_user_id = owner_user_id

    def _run(self, function: str, *arguments: Any) -> str:
        argv = cli_argv(self.cryosparcm, function, *arguments)
        try:
            program = sh.Command(argv[0])
        except sh.CommandNotFound:
            raise ToolMissingError(argv[0], "set [instances.*] cryosparcm to the path of cryosparcm") from None
        try:
            return str(program(*argv[1:], _err_to_out=True, _timeout=3600))
        except sh.ErrorReturnCode as error:
            output = error.stdout.decode(errors="replace").strip().splitlines()
            raise ApplyError(f"{' '.join(argv[1:])} on {self.name} failed (exit {error.exit_code}): "
                             f"{output[-1] if output else 'no output'}") from None
        except sh.TimeoutException:
            raise ApplyError(f"{' '.join(argv[1:])} on {self.name} did not finish within an hour") from None

    def busy_jobs(self, uid: str) -> list[str]:
        return list(self.reader.busy_jobs(uid))

    def next_free_uid(self) -> str:
        return str(self.reader.next_free_uid())

    def archive(self, uid: str) -> None:
        self._run("archive_project", uid)

    def unarchive(self, uid: str, path: str) -> None:
        self._run("unarchive_project", uid, path)

    def update_path(self, uid: str, path: str) -> None:
        self._run("update_project_directory", uid, path)

    def detach(self, uid: str) -> None:
        self._run("detach_project", uid)

    def attach(self, path: str, uid: str, imported_from: dict[str, str] | None = None, force: bool = False,
               reattach: bool = False) -> tuple[str, list[str]]:
        project = self.reader.project(uid) if reattach else None
        owner = (project or {}).get("owner_user_id") or self.owner_user_id
        if not owner:
            raise ApplyError(f"attach_project on {self.name} needs an owner: set [instances.{self.name}] "
                             "owner_user_id")
        output = self._run("attach_project", owner, path)
        found = _PROJECT_UID.findall(output)
        new_uid = found[-1] if found else uid
        notes = [] if new_uid == uid else [f"CryoSPARC assigned {new_uid} (the plan expected {uid})"]
        if imported_from:
            self._run("update_project", new_uid, {"imported_from": imported_from})
        return new_uid, notes


# -- users and scheduler lanes (the instances kind) -----------------------------------------------
#
# CryoSPARC v4 (the guide's `cryosparcm` reference):
#   cryosparcm createuser --email E --password P --username U --firstname F --lastname L
#   cryosparcm cluster connect            (reads cluster_info.json and cluster_script.sh from the
#                                          current directory; connects or updates the lane)
#   <worker>/bin/cryosparcw connect --worker H --master M --port N --ssdpath D | --nossd
#                                   --lane L [--newlane] --sshstr S   (run on the worker)
#   cryosparcm cli "remove_scheduler_target_node('H')"; cryosparcm cli "remove_scheduler_lane('L')"
# CryoSPARC v5 renamed them (as the issue lists them; the v5 reference was not in the search
# corpus, so the flags are assumed unchanged): `cryosparcm user create`, `cryosparcm worker
# connect`, `cryosparcm worker disconnect`, `cryosparcm cluster remove`.
#
# The password: `createuser` takes it only as --password in its argument list (no documented
# environment variable or stdin form), so while it ran it would be visible in the process table
# of the master host. reconciler therefore never runs it: with either driver a login is written
# to the database as Meteor's accounts store it (providers/cryosparc/accounts.py).

_VERSION = re.compile(r"\bv?(\d+)\.\d+(?:\.\d+)?")


def major_version(text: str) -> int:
    """4 from "Current cryoSPARC version: v4.6.2" (``cryosparcm status``) or "v5.0.0". Raises
    ValueError when no version is found."""
    for line in text.splitlines():
        if "version" in line.lower():
            match = _VERSION.search(line)
            if match:
                return int(match.group(1))
    raise ValueError("no CryoSPARC version in the output of cryosparcm status")


def cluster_connect_argv(cryosparcm: str, major: int) -> list[str]:
    """``cryosparcm cluster connect``, run in a directory holding cluster_info.json and cluster_script.sh."""
    return [cryosparcm, "cluster", "connect"]


def worker_connect_argv(worker_path: str, major: int, cryosparcm: str, *, hostname: str, master: str, port: int,
                        lane: str, new_lane: bool, ssh_str: str, ssd_path: str | None,
                        ssd_quota_mb: int | None) -> list[str]:
    """Connect a worker node: v4 runs ``cryosparcw connect`` on the worker, v5 ``cryosparcm worker connect``."""
    if major < 5:
        argv = [f"{worker_path.rstrip('/')}/bin/cryosparcw", "connect", "--worker", hostname, "--master", master,
                "--port", str(port)]
    else:
        argv = [cryosparcm, "worker", "connect", "--worker", hostname, "--master", master, "--port", str(port)]
    argv += ["--ssdpath", ssd_path] if ssd_path else ["--nossd"]
    if ssd_path and ssd_quota_mb is not None:
        argv += ["--ssdquota", str(ssd_quota_mb)]
    argv += ["--lane", lane] + (["--newlane"] if new_lane else []) + ["--sshstr", ssh_str]
    return argv


def remove_target_argv(cryosparcm: str, major: int, hostname: str) -> list[str]:
    if major < 5:
        return cli_argv(cryosparcm, "remove_scheduler_target_node", hostname)
    return [cryosparcm, "worker", "disconnect", hostname]


def remove_lane_argv(cryosparcm: str, major: int, lane: str) -> list[str]:
    if major < 5:
        return cli_argv(cryosparcm, "remove_scheduler_lane", lane)
    return [cryosparcm, "cluster", "remove", lane]


# Maintenance mode (the guide's "Maintenance Mode and Configurable User Facing Messages", v4.0+):
# `cryosparcm maintenancemode on|off|status` pauses the job queue: running jobs complete, queued
# jobs are not launched until it is turned off; `status` prints "Maintenance mode is currently
# ON" (or OFF). The guide documents no v5 rename of this command: the same words are used for v5.
# It does not pause running Live sessions, and the guide does not say where the flag is stored.


def maintenance_argv(cryosparcm: str, state: str) -> list[str]:
    """``cryosparcm maintenancemode on|off|status``."""
    if state not in ("on", "off", "status"):
        raise ValueError(f"maintenancemode takes on, off or status, not {state!r}")
    return [cryosparcm, "maintenancemode", state]


def maintenance_is_on(output: str) -> bool:
    """True for "Maintenance mode is currently ON". Raises ValueError when the output says neither."""
    words = re.findall(r"\b(ON|OFF)\b", output)
    if not words:
        raise ValueError("cryosparcm maintenancemode status printed neither ON nor OFF")
    return words[-1] == "ON"


def run_argv(argv: list[str], what: str, *, cwd: str | None = None, secret: bool = False) -> str:
    """Run ``argv`` (an installation's command); ``what`` names it in errors. With ``secret`` the
    arguments never appear in an error (they hold a password)."""
    try:
        program = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise ToolMissingError(argv[0], "set [instances.*] cryosparcm to the path of cryosparcm") from None
    shown = what if secret else " ".join(argv[1:])
    try:
        return str(program(*argv[1:], _err_to_out=True, _timeout=600, _cwd=cwd))
    except sh.ErrorReturnCode as error:
        output = error.stdout.decode(errors="replace").strip().splitlines()
        last = output[-1] if output else "no output"
        raise ApplyError(f"{shown} failed (exit {error.exit_code}): {last}") from None
    except sh.TimeoutException:
        raise ApplyError(f"{shown} did not finish within 10 minutes") from None

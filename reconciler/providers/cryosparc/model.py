"""The CryoSPARC v4 shaped instance model: what a project is in the database and on disk.

Database (default name ``meteor``): ``projects`` (``uid`` ``P12``, ``uid_num``,
``title``, ``project_dir``, ``owner_user_id``, ``archived``, ``detached``,
``deleted``, ``created_at``, …), ``workspaces`` (``uid`` ``W1``, ``project_uid``,
``workspace_type`` base|live, Live sessions with ``session_uid`` ``S1``,
``session_dir``, ``status``), ``jobs`` (``uid`` ``J1``, ``project_uid``,
``job_type``, ``status``, ``parents``, ``children``, ``workspace_uids``,
``params_spec``), ``users`` and ``sched_config``.

Project directory: the continuously exported records ``project.json``,
``workspaces.json``, ``job_manifest.json`` and ``J<n>/job.json``, plus ``cs.lock``
naming the instance the directory is attached to.

This module holds the names, the uid arithmetic, and reading/writing of the
exported records and the lock (small files; the callers are observers and
executors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util

from reconciler.fsutil import atomic_write_text

PROJECTS, WORKSPACES, JOBS, USERS, SCHED_CONFIG = "projects", "workspaces", "jobs", "users", "sched_config"
PROJECT_FILE = "project.json"
WORKSPACES_FILE = "workspaces.json"
MANIFEST_FILE = "job_manifest.json"
JOB_FILE = "job.json"
LOCK_FILE = "cs.lock"
EXPORTED_NAMES = (PROJECT_FILE, WORKSPACES_FILE, MANIFEST_FILE)
# Job statuses during which a project must not be archived, detached or moved.
BUSY_STATUSES = ("queued", "launched", "started", "running", "waiting")
# Set on a project document while an attach is half done; observers treat it as "attach again".
ATTACHING = "reconciler_attaching"
_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)
_UID = re.compile(r"^([PJWS])([1-9][0-9]*)$")
_JOB_DIR = re.compile(r"^J[1-9][0-9]*$")


def uid_number(uid: str) -> int:
    """``P12`` -> 12. Raises ValueError for anything that is not a uid."""
    match = _UID.match(uid)
    if not match:
        raise ValueError(f"{uid!r} is not a uid like P12")
    return int(match.group(2))


def is_project_uid(text: str) -> bool:
    match = _UID.match(text)
    return bool(match and match.group(1) == "P")


def dumps(value: Any) -> str:
    """Extended JSON (relaxed: dates as ISO strings), sorted keys: the exported records' format."""
    return json_util.dumps(value, json_options=_JSON, sort_keys=True, indent=1) + "\n"


def loads(text: str) -> Any:
    return json_util.loads(text, json_options=_JSON)


class RecordsError(ValueError):
    """An exported record is missing or unreadable; the message names the file."""


@dataclass
class Records:
    """A project's exported records, as read from its directory."""

    project: dict[str, Any]
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordsError(f"{path} is missing") from None
    except PermissionError:
        raise RecordsError(f"{path} is not readable (permission denied)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordsError(f"{path} is not valid JSON ({str(error).splitlines()[0][:120]})") from None


def job_dirs(directory: Path) -> list[Path]:
    """``J<n>`` directories of a project directory, in uid order."""
    try:
        found = [entry for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)
                 and _JOB_DIR.match(entry.name)]
    except FileNotFoundError:
        return []
    return [Path(entry.path) for entry in sorted(found, key=lambda entry: int(entry.name[1:]))]


def read_records(directory: Path) -> Records:
    """The exported records of ``directory``. Raises RecordsError naming the first bad file."""
    project = _read_json(directory / PROJECT_FILE)
    if not isinstance(project, dict) or not is_project_uid(str(project.get("uid", ""))):
        raise RecordsError(f"{directory / PROJECT_FILE} does not hold a project document (no uid like P12)")
    workspaces_path = directory / WORKSPACES_FILE
    workspaces = _read_json(workspaces_path) if workspaces_path.exists() else []
    if not isinstance(workspaces, list) or not all(isinstance(item, dict) for item in workspaces):
        raise RecordsError(f"{workspaces_path} is not a list of workspace documents")
    jobs = []
    for job_dir in job_dirs(directory):
        path = job_dir / JOB_FILE
        if not path.exists():
            continue  # a job directory without a record (being created) is not a job yet
        job = _read_json(path)
        if not isinstance(job, dict) or job.get("uid") != job_dir.name:
            raise RecordsError(f"{path} does not hold the document of job {job_dir.name}")
        jobs.append(job)
    return Records(project=project, workspaces=workspaces, jobs=jobs)


def exported_files(directory: Path) -> list[Path]:
    """The exported record files present in ``directory`` (for checksums and freshness)."""
    found = [directory / name for name in EXPORTED_NAMES if (directory / name).is_file()]
    found += [job_dir / JOB_FILE for job_dir in job_dirs(directory) if (job_dir / JOB_FILE).is_file()]
    return found


def records_digest(directory: Path) -> tuple[str, float | None]:
    """sha256 over the exported records (name and bytes, in order) and the newest mtime among them."""
    digest = hashlib.sha256()
    newest: float | None = None
    for path in exported_files(directory):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes())
        mtime = path.stat().st_mtime
        newest = mtime if newest is None else max(newest, mtime)
    return digest.hexdigest(), newest


def write_records(directory: Path, records: Records) -> None:
    """Export ``records`` into ``directory`` (each file replaced atomically; ``_id`` left out).

    ``project.json`` goes last: it says whose records these are and where the project was, so
    a run killed in the middle leaves the project document as it was, beside workspaces and
    jobs of which some are rewritten; an attach redone over them knows the old directory (for
    the session directories) and both uids (``rewrite_uid`` makes them one)."""
    def clean(document: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in document.items() if key != "_id"}

    remove_stale_temporaries(directory, records.jobs)
    atomic_write_text(directory / WORKSPACES_FILE, dumps([clean(item) for item in records.workspaces]))
    manifest = [{"uid": job["uid"], "job_type": job.get("job_type"), "status": job.get("status")}
                for job in sorted(records.jobs, key=lambda job: uid_number(job["uid"]))]
    atomic_write_text(directory / MANIFEST_FILE, dumps(manifest))
    for job in records.jobs:
        (directory / job["uid"]).mkdir(exist_ok=True)
        atomic_write_text(directory / job["uid"] / JOB_FILE, dumps(clean(job)))
    atomic_write_text(directory / PROJECT_FILE, dumps(clean(records.project)))


def is_temporary(name: str) -> bool:
    """True for a temporary file ``atomic_write_text`` makes while exporting a record
    (``.job.json.<random>.tmp``): one left behind belongs to a run that was killed."""
    return name.endswith(".tmp") and any(name.startswith(f".{exported}.") for exported in (*EXPORTED_NAMES, JOB_FILE,
                                                                                         LOCK_FILE))


def remove_stale_temporaries(directory: Path, jobs: list[dict[str, Any]]) -> list[Path]:
    """Remove the export temporaries a killed run left in ``directory`` and its job directories
    (runs hold the state lock, so none is being written now). Returns what was removed."""
    removed = []
    for folder in [directory, *(directory / str(job["uid"]) for job in jobs)]:
        try:
            names = [entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if is_temporary(name):
                (folder / name).unlink(missing_ok=True)
                removed.append(folder / name)
    return removed


def read_lock(directory: Path) -> str | None:
    """The instance id in ``cs.lock`` (JSON ``{"instance_id": …}`` or a bare id), None without a lock."""
    try:
        text = (directory / LOCK_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text.splitlines()[0] if text else ""
    if isinstance(value, dict):
        return str(value.get("instance_id", ""))
    return str(value)


def write_lock(directory: Path, instance_id: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    atomic_write_text(directory / LOCK_FILE, json.dumps({"instance_id": instance_id, "locked_at": now}) + "\n")


def remove_lock(directory: Path) -> None:
    (directory / LOCK_FILE).unlink(missing_ok=True)


def rewrite_uid(records: Records, new_uid: str) -> Records:
    """The same records under project uid ``new_uid``: the project's own uid and every
    ``project_uid`` reference; job and workspace uids (and parents/children) are project-local
    and stay."""
    project = {**records.project, "uid": new_uid, "uid_num": uid_number(new_uid)}
    workspaces = [{**item, "project_uid": new_uid} for item in records.workspaces]
    jobs = [{**job, "project_uid": new_uid} for job in records.jobs]
    return Records(project=project, workspaces=workspaces, jobs=jobs)


def _under(path: str, directory: str) -> str | None:
    """``path`` relative to ``directory`` when it lies lexically inside it (both normalised), else None."""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    if path == directory:
        return "."
    if directory == "/" or path.startswith(directory.rstrip("/") + "/"):
        return os.path.relpath(path, directory)
    return None


def session_directory(project_dir: str, session_uid: str, recorded: str | None) -> Path:
    """Where a Live session's files are now: always inside the project's *current* directory.

    A recorded ``session_dir`` is used when it is relative (to the project directory) or lies
    inside the project directory; one that points elsewhere (under a path the project has left
    after a move, an attach or an import from another instance) is not followed: the session is
    then ``<project_dir>/<session_uid>``, where CryoSPARC Live keeps it. Pure (no I/O).

    Raises ValueError when there is no project directory or the result would leave it.
    """
    if not project_dir or not os.path.isabs(project_dir):
        raise ValueError(f"the project has no absolute project_dir ({project_dir!r})")
    if recorded and not os.path.isabs(recorded):
        relative = os.path.normpath(recorded)
    elif recorded and _under(recorded, project_dir) not in (None, "."):
        relative = _under(recorded, project_dir) or session_uid
    else:
        relative = session_uid
    if relative == "." or relative.startswith("..") or os.path.isabs(relative):
        raise ValueError(f"session directory {recorded!r} is not inside the project directory {project_dir}")
    return Path(project_dir) / relative


def physically_inside(path: Path, directory: Path) -> bool:
    """True when ``path``, with every symlink resolved, lies inside ``directory`` (resolved too)."""
    real = os.path.realpath(path)
    root = os.path.realpath(directory)
    return real != root and real.startswith(root.rstrip("/") + "/")


def rebase_session_dirs(workspaces: list[dict[str, Any]], old_dir: str, new_dir: str) -> list[dict[str, Any]]:
    """``workspaces`` for a project that moved from ``old_dir`` to ``new_dir``: a recorded
    ``session_dir`` inside the old directory is carried to the same place in the new one; any
    other absolute ``session_dir`` (it pointed outside the project) is dropped, so that nothing
    ever acts on another directory (``session_directory`` then uses ``<new_dir>/<session_uid>``).
    One already inside ``new_dir`` stays (records an interrupted attach had rewritten)."""
    rebased = []
    for workspace in workspaces:
        recorded = workspace.get("session_dir")
        if not recorded or not os.path.isabs(str(recorded)) or _under(str(recorded), new_dir) not in (None, "."):
            rebased.append(workspace)
            continue
        relative = _under(str(recorded), old_dir) if old_dir else None
        item = {key: value for key, value in workspace.items() if key != "session_dir"}
        if relative not in (None, "."):
            item["session_dir"] = str(Path(new_dir) / str(relative))
        rebased.append(item)
    return rebased

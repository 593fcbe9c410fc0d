"""The rollback guard: restoring an instance's database from a backup older than its
project directories corrupts those projects (the CryoSPARC guide: the database
would describe jobs and files that the directories have moved past). ``backups
restore`` asks this module which attached projects have exported records newer
than the backup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bson

from reconciler.kinds.backups.source import BackupSource
from reconciler.providers.cryosparc.model import PROJECTS, records_digest

EXPLANATION = (
    "restoring a database backup that is older than its attached project directories corrupts those projects "
    "(CryoSPARC exports every change into the directory; an older database no longer matches it and jobs, "
    "results and workspaces are lost or overwritten). Restore a newer backup, or pass --force-rollback if you "
    "accept the risk")


@dataclass(frozen=True)
class NewerProject:
    uid: str
    project_dir: str
    newest: datetime


def backup_time(source: BackupSource) -> datetime:
    """When the backup began (its manifest), else the backup file's modification time."""
    if source.manifest is not None:
        started = source.manifest.started_at
        return started if started.tzinfo else started.replace(tzinfo=UTC)
    return datetime.fromtimestamp(source.path.stat().st_mtime, UTC)


def newer_projects(source: BackupSource, taken: datetime) -> list[NewerProject]:
    """Attached projects in the backup's ``projects`` collection whose directories hold
    exported records modified after ``taken``. Empty for backups of other databases."""
    if not any(item.collection == PROJECTS for item in source.collections):
        return []
    found: list[NewerProject] = []
    for _db, collection, raw in source.documents(validate=False):
        if collection != PROJECTS:
            continue
        document = bson.decode(raw)
        directory = document.get("project_dir")
        if not directory or document.get("detached") or document.get("deleted") or not Path(directory).is_dir():
            continue
        try:
            _digest, newest = records_digest(Path(directory))
        except OSError:
            continue
        if newest is not None and newest > taken.timestamp():
            found.append(NewerProject(str(document.get("uid")), directory, datetime.fromtimestamp(newest, UTC)))
    return found


def refusal(found: list[NewerProject], taken: datetime) -> str:
    names = ", ".join(f"{item.uid} ({item.project_dir}, records changed {item.newest:%Y-%m-%d %H:%M:%S}Z)"
                      for item in found)
    return f"refusing to restore: the backup is from {taken:%Y-%m-%d %H:%M:%S}Z but {names}; {EXPLANATION}"

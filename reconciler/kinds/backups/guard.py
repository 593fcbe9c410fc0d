"""The rollback guard: restoring an instance's database from a backup older than its
project directories corrupts those projects (the CryoSPARC guide: the database
would describe jobs and files that the directories have moved past). ``backups
restore`` asks this module which attached projects have exported records newer
than the backup."""

from __future__ import annotations

from datetime import UTC, datetime

import bson

from reconciler.kinds.backups.source import BackupSource
from reconciler.providers.cryosparc import rollback
from reconciler.providers.cryosparc.model import PROJECTS
from reconciler.providers.cryosparc.rollback import NewerProject

EXPLANATION = (
    "restoring a database backup that is older than its attached project directories corrupts those projects "
    "(CryoSPARC exports every change into the directory; an older database no longer matches it and jobs, "
    "results and workspaces are lost or overwritten). Restore a newer backup, or pass --force-rollback if you "
    "accept the risk")


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
    documents = (bson.decode(raw) for _db, collection, raw in source.documents(validate=False)
                 if collection == PROJECTS)
    return rollback.newer_projects(documents, taken)


def refusal(found: list[NewerProject], taken: datetime) -> str:
    names = rollback.describe(found)
    return f"refusing to restore: the backup is from {taken:%Y-%m-%d %H:%M:%S}Z but {names}; {EXPLANATION}"

"""The backups planner: pure functions from observed catalogs to backup, prune and cleanup actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff
from reconciler.kinds.backups.retention import Policy, decide
from reconciler.units import format_duration


class CleanupDetails(Details):
    """A ``cleanup`` action: files an interrupted backup left in ``destination`` (no manifest)."""

    destination: str
    files: list[str]


class BackupDetails(Details):
    """A ``backup`` action, as planned (the executor takes its settings from the config it runs with)."""

    database: str
    to: str
    format: str
    method: str
    compress: bool
    collections: list[str]


class PruneDetails(Details):
    """A ``prune`` action: one complete backup (its data and manifest) that retention does not keep."""

    backup_id: str
    path: str
    manifest: str
    bytes: int
    documents: int


@dataclass(frozen=True)
class BackupFact:
    backup_id: str
    time: datetime
    data_path: str
    manifest_path: str
    bytes: int
    documents: int


@dataclass
class DatabaseFacts:
    key: str
    database: str
    destination: str
    every: timedelta
    policy: Policy
    policy_text: str
    format: str
    method: str
    compress: bool
    collections: list[str]
    now: datetime
    backups: list[BackupFact] = field(default_factory=list)  # oldest first
    leftovers: list[str] = field(default_factory=list)
    reachable: bool = True


def database_address(key: str) -> str:
    return f"database:{key}"


def age_text(delta: timedelta) -> str:
    """A backup's age, rounded: "45s", "3h12m", "4d5h"."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    return format_duration(timedelta(seconds=seconds - seconds % (3600 if seconds >= 2 * 86400 else 60)))


def diff_database(facts: DatabaseFacts) -> Diff:
    address = database_address(facts.key)
    diff = Diff()
    if facts.leftovers:
        diff.actions.append(Action.create(
            address=address, kind="cleanup",
            reason=f"{len(facts.leftovers)} incomplete backup(s) left by interrupted runs (no manifest: not backups)",
            facts={"leftovers": facts.leftovers},
            details=CleanupDetails(destination=facts.destination, files=facts.leftovers),
        ))
    newest = facts.backups[-1] if facts.backups else None
    backup_action = None
    if (newest is None or facts.now - newest.time >= facts.every) and facts.reachable:
        reason = "no backup yet" if newest is None else (
            f"the newest backup is {age_text(facts.now - newest.time)} old (every {format_duration(facts.every)})")
        backup_action = Action.create(
            address=address, kind="backup", reason=reason,
            facts={"newest": newest.backup_id if newest else None},
            details=BackupDetails(database=facts.database, to=facts.destination, format=facts.format,
                                  method=facts.method, compress=facts.compress, collections=facts.collections),
        )
        diff.actions.append(backup_action)
    if not facts.backups:
        return diff
    decision = decide([backup.time for backup in facts.backups], facts.policy)
    removed = [facts.backups[index] for index in decision.remove]
    if removed and len(removed) == len(facts.backups):
        diff.errors.append(AddressMessage(address=address, message=(
            f"the retention policy ({facts.policy_text}) would remove every backup; refusing to prune")))
        return diff
    kept = ", ".join(f"{facts.backups[index].backup_id} ({', '.join(why)})" for index, why in decision.keep)
    diff.notes.append(AddressMessage(address=address, message=f"retention keeps {len(decision.keep)}: {kept}"))
    for backup in removed:
        if backup is newest:
            continue  # never prune the newest complete backup
        diff.actions.append(Action.create(
            address=address, kind="prune", destructive=True,
            reason=f"{backup.backup_id} is not kept by retention ({facts.policy_text})",
            facts={"backup": backup.backup_id, "bytes": backup.bytes},
            details=PruneDetails(backup_id=backup.backup_id, path=backup.data_path, manifest=backup.manifest_path,
                                 bytes=backup.bytes, documents=backup.documents),
            depends_on=[backup_action.id] if backup_action else [],
        ))
    return diff

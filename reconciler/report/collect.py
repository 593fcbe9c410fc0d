"""What the report shows, read from the world and the state store (no changes made):
projects with their Live sessions' datatype sizes and states, replica completeness,
backup freshness and retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reconciler.errors import ObserveError
from reconciler.kinds.projects.model import uid_number
from reconciler.kinds.sessions.datatypes import DATATYPES
from reconciler.units import format_duration


@dataclass
class SessionRow:
    uid: str
    title: str
    status: str
    datatypes: dict[str, dict[str, Any]]  # name -> {status, bytes}

    @property
    def bytes(self) -> int:
        return sum(int(item.get("bytes") or 0) for item in self.datatypes.values())


@dataclass
class ProjectRow:
    instance: str
    uid: str
    title: str
    path: str
    state: str
    declared: str | None
    in_sync: bool | None
    sessions: list[SessionRow] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(int(s.datatypes[name].get("bytes") or 0) for s in self.sessions) for name in DATATYPES}

    @property
    def bytes(self) -> int:
        return sum(self.totals.values())


@dataclass
class Report:
    generated_at: datetime
    projects: list[ProjectRow] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    backups: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _sessions(reader: Any, project_uid: str) -> list[SessionRow]:
    from reconciler.kinds.projects.model import WORKSPACES

    rows = []
    for document in reader.db[WORKSPACES].find({"project_uid": project_uid}):
        if not document.get("session_uid"):
            continue
        management = document.get("data_management") or {}
        rows.append(SessionRow(
            uid=str(document["session_uid"]), title=str(document.get("title", "")),
            status=str(document.get("status", "")),
            datatypes={name: {"status": (management.get(name) or {}).get("status", "active")
                              if DATATYPES[name].stateful else None,
                              "bytes": int((management.get(name) or {}).get("size") or 0)} for name in DATATYPES}))
    return sorted(rows, key=lambda row: uid_number(row.uid))


def collect_projects(desired: Any, report: Report) -> None:
    from reconciler.kinds.projects.commands import project_rows
    from reconciler.kinds.projects.drivers import open_reader

    rows, problems = project_rows(desired, measure=False)
    report.problems.extend(problems)
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_instance.setdefault(row["instance"], []).append(row)
    for instance, items in by_instance.items():
        try:
            with open_reader(desired, instance) as reader:
                for row in items:
                    want = row["desired"]
                    report.projects.append(ProjectRow(
                        instance=instance, uid=str(row["uid"]), title=str(row["title"]), path=row["path"],
                        state=row["state"], in_sync=row["in_sync"],
                        declared=f"{want['state']} on {want['instance']} at {want['path']}" if want else None,
                        sessions=_sessions(reader, str(row["uid"]))))
        except ObserveError as error:
            report.problems.append(f"instance {instance}: {error}")


def collect_backups(desired: Any, report: Report) -> None:
    from reconciler.kinds.backups.catalog import read_catalog
    from reconciler.kinds.backups.diff import age_text
    from reconciler.kinds.backups.kind import policy_text
    from reconciler.kinds.backups.retention import decide

    now = datetime.now(timezone.utc)
    for key, database in desired.databases.items():
        backup = database.backup
        if backup is None:
            continue
        entry: dict[str, Any] = {"key": key, "database": database.database, "to": backup.to,
                                 "every": format_duration(backup.every), "policy": policy_text(backup.retention),
                                 "count": 0, "bytes": 0, "newest": None, "age": None, "fresh": False,
                                 "keep": 0, "remove": 0, "problem": None}
        try:
            catalog = read_catalog(Path(backup.to), key)
        except OSError as error:
            entry["problem"] = f"{backup.to}: {error.strerror}"
            report.backups.append(entry)
            continue
        backups = catalog.backups
        entry["count"] = len(backups)
        entry["bytes"] = sum(item.manifest.bytes for item in backups)
        if backups:
            newest = backups[-1].time
            entry["newest"] = newest.isoformat(timespec="minutes")
            entry["age"] = age_text(now - newest)
            entry["fresh"] = now - newest < backup.every
            decision = decide([item.time for item in backups], backup.retention.policy())
            entry["keep"], entry["remove"] = len(decision.keep), len(decision.remove)
        if catalog.unreadable:
            entry["problem"] = "; ".join(catalog.unreadable[:3])
        report.backups.append(entry)


def collect(app: Any) -> Report:
    desired = app.config.model
    report = Report(generated_at=datetime.now(timezone.utc).replace(microsecond=0))
    if getattr(desired, "instances", None):
        collect_projects(desired, report)
    if getattr(desired, "replicas", None):
        from reconciler.kinds.replicas.commands import replica_rows

        report.replicas = replica_rows(app)
        for row in report.replicas:  # never a quiet "all good" about copies not observed or not sound
            if row.get("offline_since"):
                report.problems.append(f"{row['address']}: offline since {row['offline_since']}")
            if row.get("lost"):
                report.problems.append(f"{row['address']}: {row['lost']:,} files lost (no good copy anywhere)")
            if row.get("corrupt"):
                report.problems.append(f"{row['address']}: {row['corrupt']:,} corrupt copies")
    if getattr(desired, "databases", None):
        collect_backups(desired, report)
    report.projects.sort(key=lambda row: (row.instance, uid_number(row.uid)))
    return report

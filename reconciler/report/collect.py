"""What the report shows, read from the world and the state store (no changes made):
projects with their Live sessions' datatype sizes and states, replica completeness,
backup freshness and retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.errors import ObserveError
from reconciler.kinds.sessions.datatypes import DATATYPES
from reconciler.providers.cryosparc.model import uid_number
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
class Status:
    """What the world looked like when the report was made: a plan made then (read-only), and
    the last run the journal recorded."""

    observed_at: datetime | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)  # address -> messages
    notes: list[tuple[str, str]] = field(default_factory=list)  # (address, message), e.g. "waiting: …"
    warnings: list[tuple[str, str]] = field(default_factory=list)  # needs the operator, nothing failed
    destructive: list[dict[str, Any]] = field(default_factory=list)  # pending destructive actions
    planned: dict[str, int] = field(default_factory=dict)  # other actions a run would take, by kind
    last_run: dict[str, Any] | None = None
    journal: list[dict[str, Any]] = field(default_factory=list)  # the last entries

    def error_of(self, address: str) -> str | None:
        """The errors of ``address`` (or of its whole kind), joined; None when it was observed."""
        kind = address.split(":", 1)[0]
        found = self.errors.get(address, []) + self.errors.get(f"{kind}:*", [])
        return "; ".join(found) if found else None


@dataclass
class Report:
    generated_at: datetime
    projects: list[ProjectRow] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    backups: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    status: Status = field(default_factory=Status)


def _sessions(reader: Any, project_uid: str) -> list[SessionRow]:
    from reconciler.providers.cryosparc.model import WORKSPACES

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
    from reconciler.providers.cryosparc.drivers import open_reader

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
    from reconciler.kinds.backups.retention import decide, policy_of

    now = datetime.now(UTC)
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
            decision = decide([item.time for item in backups], policy_of(backup.retention))
            entry["keep"], entry["remove"] = len(decision.keep), len(decision.remove)
        if catalog.unreadable:
            entry["problem"] = "; ".join(catalog.unreadable[:3])
        observed = report.status.error_of(f"database:{key}")
        if observed:
            entry["problem"] = "; ".join(filter(None, [entry["problem"], f"could not be observed: {observed}"]))
            entry["fresh"] = False
        report.backups.append(entry)


def collect_status(app: Any, report: Report) -> None:
    """Observe now (a plan: reads only) and read the journal's last run, so that nothing in the
    report is shown as fine that could not be seen: every address whose observation failed is
    listed with its error, and its figures are marked as not current."""
    from reconciler.engine.planner import make_plan
    from reconciler.state.journal import entries, last_run

    config = app.config
    planned = make_plan(app.kinds, config.model, config.sha256, app.run_context(()))
    status = report.status
    status.observed_at = planned.plan.created_at
    for error in planned.plan.errors:
        status.errors.setdefault(error.address, []).append(error.message)
    status.notes = [(note.address, note.message) for note in planned.plan.notes]
    status.warnings = [(item.address, item.message) for item in planned.plan.warnings]
    for action in planned.plan.actions:
        if action.destructive:
            status.destructive.append({"address": action.address, "kind": action.kind, "reason": action.reason,
                                       "files": action.file_count, "bytes": action.details.get("bytes")})
        else:
            status.planned[action.kind] = status.planned.get(action.kind, 0) + 1
    run = last_run(app.read_store)
    if run is not None:
        status.last_run = {"operation": run.operation, "status": run.status, "who": run.who,
                           "started_at": run.started_at, "finished_at": run.finished_at}
        status.journal = [{"address": entry.address, "kind": entry.kind, "status": entry.status,
                           "at": entry.finished_at or entry.started_at, "message": entry.error or entry.result or ""}
                          for entry in entries(app.read_store, run.run_id)[-10:]]


def collect(app: Any) -> Report:
    desired = app.config.model
    report = Report(generated_at=datetime.now(UTC).replace(microsecond=0))
    collect_status(app, report)
    if getattr(desired, "instances", None):
        collect_projects(desired, report)
    if getattr(desired, "replicas", None):
        from reconciler.kinds.replicas.commands import replica_rows

        report.replicas = replica_rows(app)
        for row in report.replicas:
            row["error"] = report.status.error_of(row["address"])
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

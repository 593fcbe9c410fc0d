"""The projects' part of the report (each project on each instance with its Live sessions' sizes
and states per datatype, declared against actual) and the figures each run records for it: the
Live session data each instance and each declared project holds, as CryoSPARC records it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.report import Measure, ReportContext, ReportSection, fragment
from reconciler.errors import ObserveError

ORDER = 30


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
    datatype_names: tuple[str, ...] = ()
    sessions: list[SessionRow] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(int(s.datatypes[name].get("bytes") or 0) for s in self.sessions)
                for name in self.datatype_names}

    @property
    def bytes(self) -> int:
        return sum(self.totals.values())


def _datatypes() -> dict[str, bool]:
    """The Live session datatypes, each with whether it has states (providers/cryosparc/datatypes.py)."""
    from reconciler.providers.cryosparc.datatypes import DATATYPES

    return {name: item.stateful for name, item in DATATYPES.items()}


def _sessions(reader: Any, project_uid: str, datatypes: dict[str, bool]) -> list[SessionRow]:
    from reconciler.providers.cryosparc.model import WORKSPACES, uid_number

    rows = []
    for document in reader.db[WORKSPACES].find({"project_uid": project_uid}):
        if not document.get("session_uid"):
            continue
        management = document.get("data_management") or {}
        rows.append(SessionRow(
            uid=str(document["session_uid"]), title=str(document.get("title", "")),
            status=str(document.get("status", "")),
            datatypes={name: {"status": (management.get(name) or {}).get("status", "active") if stateful else None,
                              "bytes": int((management.get(name) or {}).get("size") or 0)}
                       for name, stateful in datatypes.items()}))
    return sorted(rows, key=lambda row: uid_number(row.uid))


def section(desired: Any, ctx: ReportContext) -> ReportSection:
    """Every project of every configured instance with its Live sessions (sizes as CryoSPARC
    records them; directories are not measured), then each instance's Live data over time."""
    from reconciler.kinds.projects.commands import project_rows
    from reconciler.providers.cryosparc.drivers import open_reader
    from reconciler.providers.cryosparc.model import uid_number

    datatypes = _datatypes()
    projects: list[ProjectRow] = []
    problems: list[str] = []
    if desired.instances:
        rows, problems = project_rows(desired, measure=False)
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_instance.setdefault(row["instance"], []).append(row)
        for instance, items in by_instance.items():
            try:
                with open_reader(desired, instance) as reader:
                    for row in items:
                        want = row["desired"]
                        projects.append(ProjectRow(
                            instance=instance, uid=str(row["uid"]), title=str(row["title"]), path=row["path"],
                            state=row["state"], in_sync=row["in_sync"], datatype_names=tuple(datatypes),
                            declared=f"{want['state']} on {want['instance']} at {want['path']}" if want else None,
                            sessions=_sessions(reader, str(row["uid"]), datatypes)))
            except ObserveError as error:
                problems.append(f"instance {instance}: {error}")
    projects.sort(key=lambda row: (row.instance, uid_number(row.uid)))
    data = {"projects": projects, "datatypes": list(datatypes), "configured": bool(desired.instances),
            "growth": ctx.history("instance", "bytes"), "declared": ctx.history("project", "bytes")}
    return ReportSection(key="projects", title="Projects and Live sessions", template=fragment(__package__),
                         data=data, order=ORDER,
                         count=f"{len(projects)} {'project' if len(projects) == 1 else 'projects'}",
                         problems=problems)


def measure(desired: Any, unobserved: Collection[str] = ()) -> list[Measure]:
    """Per configured instance (``instance:<key>``): the bytes of Live session data and the number
    of projects; per declared project (``project:<name>``, where it is now) its Live session data;
    as the instance's database records them now (two queries per instance; no directory is
    walked). An instance that cannot be reached is left out (its plan says so), and one the run
    could not observe (``unobserved``: its database, or a project declared on it) is not asked again."""
    from reconciler.kinds.projects.commands import _declared
    from reconciler.kinds.projects.diff import project_address
    from reconciler.providers.cryosparc.drivers import open_reader
    from reconciler.providers.cryosparc.model import PROJECTS, WORKSPACES

    found: list[Measure] = []
    for instance, config in desired.instances.items():
        on_it = [project_address(name) for name, project in desired.projects.items()
                 if instance in (project.instance, project.source_instance)]
        if any(address in unobserved for address in (f"database:{config.database}", "project:*", *on_it)):
            continue
        per_project: dict[str, int] = {}
        try:
            with open_reader(desired, instance) as reader:
                for document in reader.db[WORKSPACES].find({"session_uid": {"$exists": True}},
                                                           {"project_uid": 1, "data_management": 1}):
                    size = sum(int(item.get("size") or 0) for item in (document.get("data_management") or {}).values()
                               if isinstance(item, dict))
                    uid = str(document.get("project_uid"))
                    per_project[uid] = per_project.get(uid, 0) + size
                projects = [dict(document) for document in reader.db[PROJECTS].find(
                    {"deleted": {"$ne": True}}, {"uid": 1, "imported_from": 1})]
        except ObserveError:
            continue
        now = datetime.now(UTC)
        found += [Measure(f"instance:{instance}", "bytes", sum(per_project.values()), now),
                  Measure(f"instance:{instance}", "projects", len(projects), now)]
        for document in projects:
            declared = _declared(desired, instance, document) if desired.projects else None
            if declared is not None and declared[1].instance == instance:  # where it is meant to be
                found.append(Measure(project_address(declared[0]), "bytes",
                                     per_project.get(str(document.get("uid")), 0), now))
    return found

"""``reconciler sessions stats`` and ``reconciler sessions files``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from reconciler.errors import ConfigError, ObserveError
from reconciler.kinds.sessions.datatypes import DATATYPES, collect, total
from reconciler.kinds.sessions.observe import session_dir_of
from reconciler.kinds.sessions.tables import SessionDatatype
from reconciler.providers.cryosparc.drivers import open_reader
from reconciler.providers.cryosparc.model import WORKSPACES, uid_number
from reconciler.units import human_bytes


def _instance(desired: Any, instance: str | None) -> str:
    if instance:
        if instance not in desired.instances:
            raise ConfigError(f"no [instances.{instance}] in the config (known: {', '.join(desired.instances)})")
        return instance
    if len(desired.instances) != 1:
        raise ConfigError(f"{len(desired.instances)} instances are configured; name one with --instance")
    return str(next(iter(desired.instances)))


def _live_sessions(reader: Any, project_uid: str) -> list[dict[str, Any]]:
    documents = [dict(doc) for doc in reader.db[WORKSPACES].find({"project_uid": project_uid})
                 if doc.get("session_uid")]
    return sorted(documents, key=lambda doc: uid_number(str(doc["session_uid"])))


def session_stats(app: Any, project_uid: str, instance: str | None, refresh: bool) -> dict[str, Any]:
    """Per session and datatype: status, bytes, files; and project totals (the Data Management table).

    Without ``refresh`` sizes are the documents' (as CryoSPARC keeps them) and file counts
    the last measured; with it every datatype is measured now and the documents updated.
    """
    desired = app.config.model
    name = _instance(desired, instance)
    sessions = []
    totals = {datatype: {"bytes": 0, "files": 0} for datatype in DATATYPES}
    with open_reader(desired, name) as reader:
        found = _live_sessions(reader, project_uid)
        project = reader.project(project_uid) or {}
        if not found and not project:
            raise ObserveError(f"no project {project_uid} on {name}")
        with (app.store if refresh else app.read_store).session() as store:
            for document in found:
                session_uid = str(document["session_uid"])
                management = document.get("data_management") or {}
                row: dict[str, Any] = {"session_uid": session_uid, "status": document.get("status"),
                                       "title": document.get("title", ""), "datatypes": {}}
                for datatype in DATATYPES:
                    entry = management.get(datatype) or {}
                    cached = store.get(SessionDatatype, (name, project_uid, session_uid, datatype))
                    files = cached.files if cached else None
                    size = entry.get("size")
                    if refresh:
                        files, size = total(collect(session_dir_of(project, document), datatype))
                        reader.db[WORKSPACES].update_one(
                            {"project_uid": project_uid, "session_uid": session_uid},
                            {"$set": {f"data_management.{datatype}.size": size}})
                        store.merge(SessionDatatype(
                            instance=name, project_uid=project_uid, session_uid=session_uid, datatype=datatype,
                            status=str(entry.get("status") or "active"), files=files, bytes=size,
                            measured_at=datetime.now(UTC)))
                    status = None if not DATATYPES[datatype].stateful else str(entry.get("status") or "active")
                    row["datatypes"][datatype] = {"status": status, "bytes": size, "files": files}
                    totals[datatype]["bytes"] += int(size or 0)
                    totals[datatype]["files"] += int(files or 0)
                sessions.append(row)
            store.commit()
    return {"instance": name, "project_uid": project_uid, "sessions": sessions, "totals": totals}


@click.group("sessions")
def sessions_group() -> None:
    """CryoSPARC Live sessions: datatype sizes, states and file lists."""


@sessions_group.command("stats")
@click.argument("project_uid")
@click.option("--instance", help="The [instances.*] entry (needed when several are configured).")
@click.option("--refresh", is_flag=True, help="Measure every datatype now (and store the sizes in the sessions).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def stats_command(app: Any, project_uid: str, instance: str | None, refresh: bool, as_json: bool) -> None:
    """Per session and datatype: status, size, file count; project totals."""
    stats = session_stats(app, project_uid, instance, refresh)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    header = f"{'session':<10}{'status':<11}" + "".join(f"{name:>26}" for name in DATATYPES)
    click.echo(f"{stats['project_uid']} on {stats['instance']}")
    click.echo(header)

    def cell(item: dict[str, Any]) -> str:
        size = "-" if item["bytes"] is None else human_bytes(int(item["bytes"]))
        files = "" if item["files"] is None else f" {item['files']:,} files"
        state = f" {item['status']}" if item.get("status") and item["status"] != "active" else ""
        return f"{size}{files}{state}"

    for row in stats["sessions"]:
        click.echo(f"{row['session_uid']:<10}{str(row['status']):<11}"
                   + "".join(f"{cell(row['datatypes'][name]):>26}" for name in DATATYPES))
    click.echo(f"{'total':<21}" + "".join(f"{cell({**stats['totals'][name], 'status': None}):>26}"
                                          for name in DATATYPES))


@sessions_group.command("files")
@click.argument("target")
@click.argument("datatype", required=False)
@click.option("--instance", help="The [instances.*] entry (needed when several are configured).")
@click.option("--json", "as_json", is_flag=True, help="JSON for external archiving tools.")
@click.pass_obj
def files_command(app: Any, target: str, datatype: str | None, instance: str | None, as_json: bool) -> None:
    """File lists: `P12/S1 micrographs` for one datatype, `P12` for every session of a project."""
    if datatype is not None and datatype not in DATATYPES:
        raise ConfigError(f"unknown datatype {datatype!r}; valid: {', '.join(DATATYPES)}")
    project_uid, _, session_uid = target.partition("/")
    desired = app.config.model
    name = _instance(desired, instance)
    result: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with open_reader(desired, name) as reader:
        project = reader.project(project_uid) or {}
        sessions = [doc for doc in _live_sessions(reader, project_uid)
                    if not session_uid or doc["session_uid"] == session_uid]
        if not sessions:
            raise ObserveError(f"no Live session {target} on {name}")
        for document in sessions:
            chosen = [datatype] if datatype else list(DATATYPES)
            result[str(document["session_uid"])] = {
                item: [{"path": f.path, "size": f.size, "link": f.link}
                       for f in collect(session_dir_of(project, document), item)] for item in chosen}
    if as_json:
        if session_uid and datatype:
            click.echo(json.dumps(result[session_uid][datatype], indent=2))
        else:
            click.echo(json.dumps({"instance": name, "project_uid": project_uid, "sessions": result}, indent=2))
        return
    for session, datatypes in result.items():
        for item, files in datatypes.items():
            for entry in files:
                click.echo(f"{session}\t{item}\t{entry['size']}\t{entry['path']}")

"""``reconciler projects list`` and ``reconciler dev make-instance``."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from reconciler.errors import ConfigError, ObserveError
from reconciler.kinds.projects import model
from reconciler.kinds.projects.copy import summarize_tree
from reconciler.kinds.projects.drivers import open_reader
from reconciler.units import human_bytes


def _state(document: dict[str, Any]) -> str:
    if document.get("detached"):
        return "detached"
    return "archived" if document.get("archived") else "active"


def _declared(desired: Any, instance: str, document: dict[str, Any]) -> tuple[str, Any] | None:
    """The [projects.*] entry that declares this document, if any."""
    imported = document.get("imported_from") or {}
    ids = {key: value.instance_id for key, value in desired.instances.items()}
    for name, project in desired.projects.items():
        if project.source_instance == instance and project.uid == document.get("uid"):
            return name, project
        if project.instance == instance and imported.get("instance_id") == ids.get(project.source_instance) \
                and imported.get("uid") == project.uid:
            return name, project
    return None


def project_rows(desired: Any, measure: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Every project on every configured instance, with what the config declares for it."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    names = {value.instance_id: key for key, value in desired.instances.items()}
    for instance in desired.instances:
        try:
            with open_reader(desired, instance) as reader:
                documents = [dict(doc) for doc in reader.db[model.PROJECTS].find({})]
        except ObserveError as error:
            problems.append(f"instance {instance}: {error}")
            continue
        for document in sorted(documents, key=lambda doc: model.uid_number(str(doc.get("uid", "P0")))):
            if document.get("deleted"):
                continue
            directory = Path(str(document.get("project_dir", "")))
            exists = directory.is_dir()
            lock = model.read_lock(directory) if exists else None
            size = summarize_tree(directory) if exists and measure else None
            newest = model.records_digest(directory)[1] if exists else None
            declared = _declared(desired, instance, document)
            row: dict[str, Any] = {
                "instance": instance, "uid": document.get("uid"), "title": document.get("title", ""),
                "path": str(directory), "exists": exists, "state": _state(document),
                "files": size.files if size else None, "bytes": size.bytes if size else None,
                "lock": names.get(lock or "", lock), "imported_from": document.get("imported_from"),
                "records_changed": datetime.fromtimestamp(newest, timezone.utc).isoformat(timespec="seconds")
                if newest else None,
                "name": None, "desired": None, "in_sync": None}
            if declared:
                name, project = declared
                row["name"] = name
                row["desired"] = {"instance": project.instance, "path": project.path, "state": project.state}
                row["in_sync"] = (instance == project.instance and str(directory) == project.path
                                  and row["state"] == project.state)
            rows.append(row)
    return rows, problems


@click.group("projects")
def projects_group() -> None:
    """CryoSPARC projects on the configured instances."""


@projects_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-size", is_flag=True, help="Skip measuring directories (fast on huge projects).")
@click.pass_obj
def list_projects(app: Any, as_json: bool, no_size: bool) -> None:
    """uid, title, instance, path, state, size, lock owner, desired vs actual."""
    rows, problems = project_rows(app.config.model, measure=not no_size)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        for row in rows:
            origin = row["imported_from"]
            uid = f"{row['uid']} (was {origin['uid']})" if origin else row["uid"]
            size = f"{row['files']:,} files, {human_bytes(row['bytes'])}" if row["files"] is not None else (
                "-" if row["exists"] else "MISSING")
            click.echo(f"{row['instance']}/{uid}  {row['title']}")
            click.echo(f"  path:   {row['path']}  ({size})")
            click.echo(f"  state:  {row['state']}, lock: {row['lock'] or 'none'}, "
                       f"records changed {row['records_changed'] or '-'}")
            if row["desired"]:
                want = row["desired"]
                verdict = "as declared" if row["in_sync"] else (
                    f"declared: {want['state']} on {want['instance']} at {want['path']}")
                click.echo(f"  [projects.{row['name']}]: {verdict}")
    if problems:
        raise SystemExit(1)


@click.group("dev")
def dev_group() -> None:
    """Tools for trying reconciler out: generated instances."""


@dev_group.command("make-instance")
@click.option("--uri", help="MongoDB server, e.g. mongodb://127.0.0.1:27017 (prefer --uri-env).")
@click.option("--uri-env", help="Environment variable holding the connection string.")
@click.option("--database", default="meteor", show_default=True)
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the project directories.")
@click.option("--instance-id", required=True, help="What cs.lock will hold.")
@click.option("--projects", default=3, show_default=True)
@click.option("--jobs", default=6, show_default=True)
@click.option("--sessions", default=1, show_default=True, help="Live sessions per project.")
@click.option("--movies", default=4, show_default=True, help="Movies per Live session.")
@click.option("--first-uid", default=1, show_default=True, help="Number of the first project (P<n>).")
@click.option("--running-jobs", default=0, show_default=True, help="Running jobs in the first project.")
def make_instance_command(uri: str | None, uri_env: str | None, database: str, root: Path, instance_id: str,
                          projects: int, jobs: int, sessions: int, movies: int, first_uid: int,
                          running_jobs: int) -> None:
    """Build a CryoSPARC-shaped instance (database + project directories) to try reconciler on."""
    from reconciler.kinds.backups.connection import connect
    from reconciler.kinds.projects.generator import make_instance

    if (uri is None) == (uri_env is None):
        raise ConfigError("give the server as exactly one of --uri and --uri-env")
    target = uri if uri is not None else os.environ.get(uri_env or "")
    if not target:
        raise ConfigError(f"${uri_env} is not set")
    client = connect(target)
    try:
        made = make_instance(client[database], root.resolve(), instance_id, projects=projects, jobs=jobs,
                             sessions=sessions, movies=movies, first_uid=first_uid, running_jobs=running_jobs)
    finally:
        client.close()
    for project in made:
        click.echo(f"{project.uid}  {project.title}  {project.project_dir}  "
                   f"({len(project.jobs)} jobs, sessions {', '.join(project.sessions) or '-'})")

"""``reconciler projects list`` and ``reconciler dev make-instance``."""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler.engine.listing import emit_listing
from reconciler.errors import ConfigError, ObserveError
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.copy import summarize_tree
from reconciler.providers.cryosparc.drivers import open_reader
from reconciler.units import human_bytes, parse_duration


def _state(document: dict[str, Any]) -> str:
    if document.get("detached"):
        return "detached"
    return "archived" if document.get("archived") else "active"


def _declared(desired: Any, instance: str, document: dict[str, Any]) -> tuple[str, Any] | None:
    """The [projects.*] entry that declares this document, if any."""
    imported = document.get("imported_from") or {}
    ids = {key: value.instance_id for key, value in desired.instances.items()}
    for name, project in desired.projects.items():
        if project.bundle is not None:
            origin = _bundle_origin(project.bundle)
            if project.instance == instance and origin and imported.get("instance_id") == origin[0] \
                    and imported.get("uid") == origin[1]:
                return name, project
            continue
        if project.source_instance == instance and project.uid == document.get("uid"):
            return name, project
        if project.instance == instance and imported.get("instance_id") == ids.get(project.source_instance) \
                and imported.get("uid") == project.uid:
            return name, project
    return None


@functools.lru_cache(maxsize=64)
def _bundle_origin(path: str) -> tuple[str, str] | None:
    """(source instance id, source uid) from a bundle's bundle.json, None when unreadable."""
    from reconciler.kinds.projects.bundle import BundleError, read_header

    try:
        header = read_header(Path(path))
    except BundleError:
        return None
    return header.source_instance.get("instance_id", ""), header.project_uid


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
                "records_changed": datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds")
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

    def lines_of(row: dict[str, Any]) -> list[str]:
        origin = row["imported_from"]
        uid = f"{row['uid']} (was {origin['uid']})" if origin else row["uid"]
        size = f"{row['files']:,} files, {human_bytes(row['bytes'])}" if row["files"] is not None else (
            "-" if row["exists"] else "MISSING")
        lines = [f"{row['instance']}/{uid}  {row['title']}", f"  path:   {row['path']}  ({size})",
                 f"  state:  {row['state']}, lock: {row['lock'] or 'none'}, "
                 f"records changed {row['records_changed'] or '-'}"]
        if row["desired"]:
            want = row["desired"]
            verdict = "as declared" if row["in_sync"] else (
                f"declared: {want['state']} on {want['instance']} at {want['path']}")
            lines.append(f"  [projects.{row['name']}]: {verdict}")
        return lines

    emit_listing(rows, as_json, lines_of, problems=problems)


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
    from reconciler.kinds.projects.generator import make_instance
    from reconciler.providers.mongo.connection import connect

    if (uri is None) == (uri_env is None):
        raise ConfigError("give the server as exactly one of --uri and --uri-env")
    target = uri if uri is not None else os.environ.get(uri_env or "")
    if not target:
        raise ConfigError(f"${uri_env} is not set")
    client = connect(target)
    try:
        made = make_instance(client[database], root.resolve(), instance_id, projects=projects, jobs=jobs,
                             sessions=sessions, movies=movies, first_uid=first_uid, running_jobs=running_jobs)
    except ValueError as error:
        raise ConfigError(f"{error} (--first-uid)") from None
    finally:
        client.close()
    for project in made:
        click.echo(f"{project.uid}  {project.title}  {project.project_dir}  "
                   f"({len(project.jobs)} jobs, sessions {', '.join(project.sessions) or '-'})")


def _referenced_users(reader: Any, records: Any) -> list[dict[str, Any]]:
    """The users a project's documents name (``*user_id`` fields), with only their id, name and
    emails: never passwords, tokens or other secrets."""
    ids: set[str] = set()

    def visit(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                visit(item, name)
        elif isinstance(value, list):
            for item in value:
                visit(item, key)
        elif key.endswith("user_id") and isinstance(value, str):
            ids.add(value)

    visit(records.project)
    visit(records.workspaces)
    visit(records.jobs)
    users = []
    for user in reader.db[model.USERS].find({"_id": {"$in": sorted(ids)}}):
        users.append({"_id": user["_id"], "name": user.get("name", ""),
                      "emails": [{"address": item.get("address")} for item in user.get("emails") or []
                                 if isinstance(item, dict)]})
    return users


@projects_group.command("export")
@click.argument("uid")
@click.option("--instance", required=True, help="The [instances.*] entry the project is on.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle: NAME.bundle.tar, .tar.gz or .tar.zst.")
@click.option("--include-data/--metadata-only", default=True, show_default=True,
              help="Carry the project directory, or only its documents.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Add an HMAC-SHA256 of the manifest made with this key file.")
@click.option("--lock-timeout", default="0s", show_default=True, metavar="DURATION",
              help="How long to wait for a running apply/reconcile (its lock) before failing, e.g. 5m.")
@click.pass_obj
def export_command(app: Any, uid: str, instance: str, output: Path, include_data: bool,
                   sign_key: Path | None, lock_timeout: str) -> None:
    """Write a project (documents + directory) as one verifiable bundle file, under the state
    database's lock (never while an apply or reconcile moves or detaches it)."""
    from reconciler.state import lock

    try:
        timeout = parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lock-timeout") from None
    with lock.held(app.store, "projects export", timeout):
        _export(app, uid, instance, output, include_data, sign_key)


def _export(app: Any, uid: str, instance: str, output: Path, include_data: bool, sign_key: Path | None) -> None:
    from reconciler.kinds.projects.bundle import export_bundle, load_key

    desired = app.config.model
    with open_reader(desired, instance) as reader:
        document = reader.project(uid)
        if document is None:
            raise ObserveError(f"no project {uid} on {instance}")
        busy = reader.busy_jobs(uid)
        if busy:
            raise ObserveError(f"jobs {', '.join(busy)} of {uid} are queued or running; export when they finish")
        records = reader.records(uid)
        users = _referenced_users(reader, records)
    directory = Path(document["project_dir"]) if include_data else None
    if directory is not None and not directory.is_dir():
        raise ObserveError(f"the directory of {uid}, {directory}, is missing (use --metadata-only for the documents)")
    summary = export_bundle(output, records, users, {"name": instance, "instance_id": reader.instance_id},
                            directory, load_key(sign_key), lambda done, total: app.progress("export", done, total))
    click.echo(f"wrote {output}: {summary['members']:,} members, {human_bytes(summary['bytes'])} of data"
               + (", signed" if sign_key else ""))
    if summary["external_links"]:
        first = summary["external_links"][0]
        click.echo(f"note: {len(summary['external_links'])} links point outside the project and are not carried "
                   f"(e.g. {first['path']} -> {first['target']})", err=True)


@projects_group.command("verify-bundle")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--verify-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require a valid signature made with this key file.")
@click.option("--json", "as_json", is_flag=True, help="The bundle's bundle.json after the checks.")
def verify_bundle_command(bundle: Path, verify_key: Path | None, as_json: bool) -> None:
    """Check every checksum, the manifest's completeness, bundle.json's schema and safety."""
    from reconciler.kinds.projects.bundle import describe, header_json, load_key, verify_bundle

    verification = verify_bundle(bundle, load_key(verify_key))
    header, problems = verification.header, verification.problems
    if problems:
        click.echo(f"DAMAGED {bundle}")
        for problem in problems:
            click.echo(f"  {problem}")
        raise SystemExit(1)
    assert header is not None
    click.echo(header_json(header) if as_json else f"ok {bundle}: {describe(header)}")


@projects_group.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--instance", required=True, help="The [instances.*] entry to import into.")
@click.option("--path", "destination", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The new, absolute project directory.")
@click.option("--uid", help="The uid to give the project (default: the next free one).")
@click.option("--owner-fallback", help="User (id or email) to own the project when its owner is not a user here.")
@click.option("--verify-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Refuse unsigned bundles and bundles whose signature does not match this key.")
@click.option("--lock-timeout", default="0s", show_default=True, metavar="DURATION",
              help="How long to wait for another run's lock (e.g. 30s, 5m) before failing.")
@click.pass_obj
def import_command(app: Any, bundle: Path, instance: str, destination: Path, uid: str | None,
                   owner_fallback: str | None, verify_key: Path | None, lock_timeout: str) -> None:
    """Verify a bundle, then import it with a new uid; on any failure nothing is left behind.

    Holds the state database's lock, as apply does: one import (or apply) at a time."""
    from reconciler.kinds.projects.bundle import load_key
    from reconciler.kinds.projects.bundle_import import import_bundle
    from reconciler.state import lock
    from reconciler.units import parse_duration

    if not destination.is_absolute():
        raise ConfigError(f"--path {destination}: give an absolute path")
    try:
        timeout = parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise ConfigError(f"--lock-timeout {lock_timeout}: {error}") from None
    with lock.held(app.store, "import", timeout), open_reader(app.config.model, instance) as reader:
        report = import_bundle(bundle.resolve(), reader, app.store, destination, uid, owner_fallback,
                               load_key(verify_key))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"imported {bundle.name} into {instance} as {report.uid} at {report.path} "
               f"({report.jobs} jobs, {report.workspaces} workspaces, {report.files:,} files; owner {report.owner})")

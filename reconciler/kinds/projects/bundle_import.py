"""Importing a bundle into an instance: verify first (nothing touched when it fails), extract
into a staging directory, insert the documents under a new uid, then move the directory into
place. Any failure rolls back what was done; checkpoints in the state store let the next run
roll back an import that was killed half-way before it starts again."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from reconciler.errors import ApplyError
from reconciler.kinds.projects.bundle import BundleError, BundleHeader, extract_data, verify_bundle
from reconciler.kinds.projects.tables import BundleImport
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.drivers.mongo import MongoDriver
from reconciler.providers.cryosparc.model import ATTACHING, JOBS, PROJECTS, USERS, WORKSPACES, Records
from reconciler.providers.mongo.connection import redact

# Dropped on import (the oSPARC note: tags and sharing belong to the deployment, not the study).
DROPPED_FIELDS = ("tags", "shared_with", "sharing", "members", "collaborators")


@dataclass
class ImportReport:
    uid: str
    path: str
    owner: str
    jobs: int
    workspaces: int
    files: int
    notes: list[str] = field(default_factory=list)


def _emails(user: dict[str, Any]) -> list[str]:
    found = [str(item.get("address", "")).lower() for item in user.get("emails") or [] if isinstance(item, dict)]
    if user.get("email"):
        found.append(str(user["email"]).lower())
    return [email for email in found if email]


def map_owner(header: BundleHeader, reader: MongoDriver, fallback: str | None) -> tuple[str, str | None]:
    """The target user owning the project: the bundle owner's email matched to a user here,
    else ``fallback`` (a user id or email that must exist here). Returns (user id, note)."""
    owner = header.records().project.get("owner_user_id")
    source_users = {str(user.get("_id")): user for user in header.user_documents()}
    emails = _emails(source_users.get(str(owner), {}))
    for user in reader.db[USERS].find({}):
        if set(_emails(user)) & set(emails):
            return str(user["_id"]), None
    if fallback:
        for user in reader.db[USERS].find({}):
            if str(user["_id"]) == fallback or fallback.lower() in _emails(user):
                described = ", ".join(emails) or "no email in the bundle"
                return str(user["_id"]), f"owner {owner} ({described}) is not a user on {reader.name}; " \
                                         f"assigned to {user['_id']}"
        raise ApplyError(f"--owner-fallback {fallback} is not a user on {reader.name}")
    described = ", ".join(emails) or "no email in the bundle"
    raise ApplyError(f"the project's owner ({described}) is not a user on {reader.name}; name an existing user "
                     "with --owner-fallback (a project is never given to a random user)")


def roll_back_unfinished(store: Any, reader: MongoDriver) -> list[str]:
    """Undo imports into this instance that a killed run left unfinished. Returns what was undone."""
    undone = []
    with store.session() as session:
        rows = session.exec(select(BundleImport).where(BundleImport.instance == reader.name,
                                                       col(BundleImport.stage).in_(["extracting", "inserting"]))).all()
        for row in rows:
            _undo(reader, row.uid, Path(row.staging), Path(row.destination), moved=row.stage == "inserting")
            row.stage, row.finished_at = "rolled_back", datetime.now(UTC)
            session.add(row)
            undone.append(f"rolled back the unfinished import of {row.bundle} as {row.uid}")
        session.commit()
    return undone


def _undo(reader: MongoDriver, uid: str, staging: Path, destination: Path, moved: bool) -> None:
    project = reader.project(uid)
    if project is not None and project.get(ATTACHING):  # ours, never finished
        reader.db[JOBS].delete_many({"project_uid": uid})
        reader.db[WORKSPACES].delete_many({"project_uid": uid})
        reader.db[PROJECTS].delete_many({"uid": uid})
    if staging.exists():
        shutil.rmtree(staging)
    if moved and destination.exists() and model.read_lock(destination) in (None, reader.instance_id) and (
            project is None or project.get(ATTACHING)):
        shutil.rmtree(destination)


def import_bundle(bundle: Path, reader: MongoDriver, store: Any, destination: Path, uid: str | None = None,
                  owner_fallback: str | None = None, key: bytes | None = None) -> ImportReport:
    """Import ``bundle`` into ``reader``'s instance at ``destination``. Raises ApplyError (with
    everything undone) or BundleError (nothing touched)."""
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    verification = verify_bundle(bundle, key)
    header, problems = verification.header, verification.problems
    if problems or header is None:
        raise BundleError(f"{bundle} failed verification, nothing was imported: " + "; ".join(problems[:5])
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    notes = roll_back_unfinished(store, reader)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ApplyError(f"{destination} exists and is not empty; import into a new directory")
    _check_room(destination, verification.expanded_bytes)
    if uid is not None:
        if not model.is_project_uid(uid):
            raise ApplyError(f"--uid {uid}: write a project uid like P40")
        if reader.project(uid) is not None:
            raise ApplyError(f"{uid} is taken on {reader.name}; choose another --uid or leave it out")
    chosen = uid or reader.next_free_uid()
    owner, note = map_owner(header, reader, owner_fallback)
    if note:
        notes.append(note)
    source_records = header.records()
    records = model.rewrite_uid(source_records, chosen)
    records = Records(records.project, model.rebase_session_dirs(
        records.workspaces, str(source_records.project.get("project_dir") or ""), str(destination)), records.jobs)
    project = dict(records.project)
    dropped = [name for name in DROPPED_FIELDS if project.pop(name, None) not in (None, [], {})]
    if dropped:
        notes.append(f"dropped {', '.join(dropped)} (they belong to the source deployment)")
    source = header.source_instance
    project.update({"owner_user_id": owner, "project_dir": str(destination), "archived": False, "detached": True,
                    "deleted": False, ATTACHING: datetime.now(UTC),
                    "imported_from": {"instance_id": source.get("instance_id", ""), "uid": header.project_uid,
                                      "bundle": bundle.name}})
    # a staging directory of this run's own (made with mkdir, never reused): two imports can never
    # extract into one another's, whatever state databases they use
    staging = destination.with_name(f".{destination.name}.importing-{uuid.uuid4().hex[:12]}")
    with store.session() as session:
        row = BundleImport(bundle=str(bundle), instance=reader.name, uid=chosen, destination=str(destination),
                           staging=str(staging), stage="extracting", started_at=datetime.now(UTC))
        session.add(row)
        session.commit()
        session.refresh(row)
        row_id = row.id
    moved = False
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        files = extract_data(bundle, staging, verification.expanded_bytes) if header.includes_data else 0
        _stage(store, row_id, "inserting")
        reader.db[PROJECTS].insert_one(dict(project))
        if records.workspaces:
            reader.db[WORKSPACES].insert_many([dict(item) for item in records.workspaces])
        if records.jobs:
            reader.db[JOBS].insert_many([dict(item) for item in records.jobs])
        if destination.exists():
            destination.rmdir()
        staging.rename(destination)
        moved = True
        final = {key_: value for key_, value in project.items() if key_ != ATTACHING}
        final["detached"] = False
        model.write_records(destination, Records(final, records.workspaces, records.jobs))
        model.write_lock(destination, reader.instance_id)
        reader.db[PROJECTS].update_one({"uid": chosen}, {"$set": {"detached": False}, "$unset": {ATTACHING: ""}})
        _stage(store, row_id, "done")
    except BaseException as error:
        _undo(reader, chosen, staging, destination, moved)
        _stage(store, row_id, "rolled_back")
        if isinstance(error, PyMongoError):
            raise ApplyError(f"importing {bundle.name} failed and was rolled back: "
                             f"{redact(str(error).splitlines()[0])}") from None
        if isinstance(error, OSError):
            raise ApplyError(f"importing {bundle.name} failed and was rolled back: {error.strerror}: "
                             f"{error.filename}") from None
        if isinstance(error, BundleError):
            raise ApplyError(f"importing {bundle.name} failed and was rolled back: {error}") from None
        raise
    if header.external_links:
        notes.append(f"{len(header.external_links)} links to data outside the project were not carried "
                     f"(e.g. {header.external_links[0]['path']} -> {header.external_links[0]['target']})")
    return ImportReport(uid=chosen, path=str(destination), owner=owner, jobs=len(records.jobs),
                        workspaces=len(records.workspaces), files=files, notes=notes)


def _check_room(destination: Path, needed: int) -> None:
    """Refuse an import whose files would not fit on the destination's file system (with a
    margin), before anything is written. Raises ApplyError."""
    existing = next((parent for parent in [destination, *destination.parents] if parent.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    margin = max(64 << 20, needed // 100)
    if needed + margin > free:
        from reconciler.units import human_bytes

        raise ApplyError(f"the bundle's files need {human_bytes(needed)} and {existing} has "
                         f"{human_bytes(free)} free; free some space or import elsewhere")


def _stage(store: Any, row_id: int | None, stage: str) -> None:
    with store.session() as session:
        row = session.get(BundleImport, row_id)
        if row is not None:
            row.stage = stage
            if stage in ("done", "rolled_back"):
                row.finished_at = datetime.now(UTC)
            session.add(row)
            session.commit()

"""Whole-instance migration, the CryoSPARC guide's alternative B (``migrate_from``,
``migration = "attach"``): every project of the source instance that no ``[projects.*]`` entry
declares is detached there, copied when its path changes (``migrate_paths``), and attached
on the target under the next free uids, after the target's users and lanes are in place.

Addresses: ``migration:<target>/<source uid>``. Each project's steps depend on the one
before; the first depends on every user and lane action of the target. The state store keeps
one checkpoint row per project (tables.py) and the target's documents record
``imported_from``, so a run killed at any point re-observes and continues: a project is
never attached twice (an attach that was cut short carries the ``reconciler_attaching`` mark
and is redone under the same uid), and a detached source project is attached from its
verified copy.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff, RunContext
from reconciler.kinds.instances.tables import MigratedProject
from reconciler.providers.cryosparc import accounts, model, scheduler
from reconciler.providers.cryosparc.copy import summarize_tree
from reconciler.providers.cryosparc.readers import Readers, find_imported
from reconciler.units import human_bytes


@dataclass
class MigratingProject:
    uid: str
    title: str
    source_path: str
    path: str
    detached: bool  # on the source
    busy_jobs: list[str] = field(default_factory=list)
    files: int | None = None
    bytes: int | None = None
    imported_uid: str | None = None  # on the target (imported_from = source id + uid)
    attaching: bool = False  # that attach was cut short
    checkpoint: dict[str, bool] = field(default_factory=dict)  # detached / copied / attached by a migration
    destination_other: bool = False  # the new path exists and holds something else
    owner_email: str | None = None  # the owner's email on the source (owners are mapped by email)


@dataclass
class MigrationFacts:
    target: str
    source: str
    source_id: str
    next_number: int  # the target's next free project number
    prerequisites: list[str] = field(default_factory=list)  # user and lane addresses on the target
    projects: list[MigratingProject] = field(default_factory=list)
    users_to_merge: list[str] = field(default_factory=list)  # emails on the source only
    user_conflicts: list[str] = field(default_factory=list)  # on both, with another name or role
    lanes_to_merge: list[str] = field(default_factory=list)  # lanes on the source only (not declared)


class InstancePair(Details):
    """What goes from instance ``source`` to instance ``target`` (the base of the migration actions)."""

    source: str
    target: str


class MergeUserDetails(InstancePair):
    """A ``merge_user``: the source's login ``email`` carried over to the target (with its password hash)."""

    email: str


class MergeLaneDetails(InstancePair):
    """A ``merge_lane``: the source's lane ``lane`` and its targets carried over to the target."""

    lane: str


class ImportedFrom(Details):
    """Which project of which instance an attached project came from (recorded on the target)."""

    instance_id: str
    uid: str


class AttachMigrationDetails(InstancePair):
    """A ``migrate_detach``, ``migrate_copy`` or ``migrate_attach`` (alternative B; a project's steps
    share one details): source project ``uid`` becomes ``new_uid`` on the target, its directory
    ``source_path`` is copied to ``path`` when they differ, its size as observed (None: not measured),
    and its owner's email on the source (None: no owner with an email)."""

    uid: str
    new_uid: str
    source_path: str
    path: str
    files: int | None
    bytes: int | None
    owner_email: str | None
    imported_from: ImportedFrom


def migration_address(target: str, uid: str) -> str:
    return f"migration:{target}/{uid}"


def new_path(path: str, prefixes: dict[str, str]) -> str:
    """``path`` under the longest matching old prefix of ``prefixes`` moved to its new prefix."""
    for old in sorted(prefixes, key=len, reverse=True):
        stripped = old.rstrip("/")
        if path == stripped or path.startswith(stripped + "/"):
            return prefixes[old].rstrip("/") + path[len(stripped):]
    return path


def observe_migration(desired: Any, target: str, readers: Readers, ctx: RunContext,
                      prerequisites: list[str]) -> MigrationFacts:
    """Read the source's projects, what the target already imported, and the checkpoints."""
    config = desired.instances[target]
    source = str(config.migrate_from)
    source_reader, target_reader = readers.get(source), readers.get(target)
    source_id = desired.instances[source].instance_id
    declared = {project.uid for project in (getattr(desired, "projects", {}) or {}).values()
                if getattr(project, "source_instance", None) == source and project.uid}
    with ctx.state.session() as session:
        rows = {row.source_uid: row for row in session.exec(
            select(MigratedProject).where(MigratedProject.target == target, MigratedProject.source == source))}
    numbers = [doc.get("uid_num") or model.uid_number(doc["uid"])
               for doc in target_reader.db[model.PROJECTS].find({}, {"uid": 1, "uid_num": 1})]
    facts = MigrationFacts(target=target, source=source, source_id=source_id,
                           next_number=max(numbers, default=0) + 1, prerequisites=prerequisites)
    _observe_merge(desired, facts, source_reader.db, target_reader.db)
    documents = [doc for doc in source_reader.db[model.PROJECTS].find({"deleted": {"$ne": True}})
                 if doc.get("uid") not in declared]
    for document in sorted(documents, key=lambda doc: model.uid_number(doc["uid"])):
        uid = str(document["uid"])
        source_path = str(document.get("project_dir") or "")
        row = rows.get(uid)
        item = MigratingProject(uid=uid, title=str(document.get("title") or ""), source_path=source_path,
                                path=row.path if row else new_path(source_path, config.migrate_paths),
                                detached=bool(document.get("detached")))
        if row is not None:
            item.checkpoint = {"detached": row.detached_at is not None, "copied": row.copied_at is not None,
                               "attached": row.attached_at is not None}
        owner = source_reader.db[model.USERS].find_one({"_id": document.get("owner_user_id")})
        if owner is not None and accounts.emails_of(owner):
            item.owner_email = accounts.emails_of(owner)[0]
        imported = find_imported(target_reader, source_id, uid)
        if imported is not None:
            item.imported_uid, item.attaching = str(imported["uid"]), bool(imported.get(model.ATTACHING))
        if not item.detached:
            item.busy_jobs = source_reader.busy_jobs(uid)
        if Path(source_path).is_dir():
            summary = summarize_tree(Path(source_path))
            item.files, item.bytes = summary.files, summary.bytes
        if item.path != source_path and row is None and Path(item.path).is_dir() and os.listdir(item.path):
            item.destination_other = True
        facts.projects.append(item)
    return facts


def _observe_merge(desired: Any, facts: MigrationFacts, source_db: Any, target_db: Any) -> None:
    """Users (by email) and lanes of the source that the target lacks; users on both whose
    name or role differ (the target's are kept unless [users.*] says otherwise)."""
    from reconciler.kinds.instances.config import applies_to, normalise_email

    absent = {normalise_email(email) for email, user in (getattr(desired, "users", {}) or {}).items()
              if user.absent and applies_to(user.instances, facts.target)}
    target_users = {}
    for user in accounts.list_users(target_db):
        for email in accounts.emails_of(user):
            target_users[email] = user
    for user in accounts.list_users(source_db):
        emails = accounts.emails_of(user)
        if not emails or emails[0] in absent:
            continue
        other = next((target_users[email] for email in emails if email in target_users), None)
        if other is None:
            facts.users_to_merge.append(emails[0])
        elif (other.get("name"), accounts.role_of(other)) != (user.get("name"), accounts.role_of(user)):
            facts.user_conflicts.append(f"{emails[0]} (here: {other.get('name')}, {accounts.role_of(other)}; "
                                        f"{facts.source}: {user.get('name')}, {accounts.role_of(user)})")
    declared = set(getattr(desired, "lanes", {}) or {})
    on_target = {lane["name"] for lane in scheduler.lanes(target_db)}
    facts.lanes_to_merge = [lane["name"] for lane in scheduler.lanes(source_db)
                            if lane["name"] not in on_target and lane["name"] not in declared]


def _diff_merge(facts: MigrationFacts) -> tuple[Diff, list[str]]:
    """merge_user / merge_lane actions, and the addresses the projects' steps wait for."""
    diff = Diff()
    waits: list[str] = []
    basis = {"users": facts.users_to_merge, "lanes": facts.lanes_to_merge}
    for email in facts.users_to_merge:
        address = f"user:{facts.target}/{email}"
        diff.actions.append(Action.create(address=address, kind="merge_user", facts=basis,
                                          details=MergeUserDetails(source=facts.source, target=facts.target,
                                                                   email=email),
                                          reason=f"carry the login {email} over from {facts.source} (same id "
                                                 "scheme, same password hash)"))
        waits.append(address)
    for lane in facts.lanes_to_merge:
        address = f"lane:{facts.target}/{lane}"
        diff.actions.append(Action.create(address=address, kind="merge_lane", facts=basis,
                                          details=MergeLaneDetails(source=facts.source, target=facts.target,
                                                                   lane=lane),
                                          reason=f"carry the lane {lane} and its targets over from {facts.source}"))
        waits.append(address)
    if facts.user_conflicts:
        diff.notes.append(AddressMessage(address=f"instance:{facts.target}", message=(
            "users on both instances with another name or role; the target's are kept (declare [users.\"<email>\"] "
            "to choose): " + "; ".join(facts.user_conflicts))))
    return diff, waits


def diff_migration(facts: MigrationFacts) -> Diff:
    """The steps that bring every remaining project of the source to the target (pure)."""
    diff, waits = _diff_merge(facts)
    number = facts.next_number
    mapping: list[str] = []
    for project in facts.projects:
        address = migration_address(facts.target, project.uid)
        size = (f"{project.files:,} files, {human_bytes(project.bytes or 0)}" if project.files is not None
                else "size unknown")
        if project.imported_uid is not None and not project.attaching:
            continue  # arrived
        if project.detached and not project.checkpoint.get("detached") and project.imported_uid is None:
            diff.notes.append(AddressMessage(address=address, message=(
                f"{project.uid} was detached from {facts.source} before the migration; not moved (declare it in "
                "[projects.*] to attach it somewhere)")))
            continue
        if project.busy_jobs and not project.detached:
            diff.notes.append(AddressMessage(address=address, message=(
                f"waiting: jobs {', '.join(project.busy_jobs)} of {project.uid} on {facts.source} are queued or "
                "running; it moves when they finish")))
            continue
        if project.destination_other:
            diff.errors.append(AddressMessage(address=address, message=(
                f"{project.path} already exists and holds other data; change [instances.{facts.target}] "
                "migrate_paths or empty it")))
            continue
        if project.imported_uid is not None:
            new_uid = project.imported_uid
        else:
            new_uid, number = f"P{number}", number + 1
        mapping.append(f"{project.uid} -> {new_uid} ({project.path}, {size})")
        basis = asdict(project)
        details = AttachMigrationDetails(source=facts.source, target=facts.target, uid=project.uid, new_uid=new_uid,
                                         source_path=project.source_path, path=project.path, files=project.files,
                                         bytes=project.bytes, owner_email=project.owner_email,
                                         imported_from=ImportedFrom(instance_id=facts.source_id, uid=project.uid))
        steps: list[tuple[str, str]] = []
        if not project.detached:
            steps.append(("migrate_detach", f"detach {project.uid} ({project.title}) from {facts.source}"))
        if project.path != project.source_path and not project.checkpoint.get("copied"):
            steps.append(("migrate_copy", f"copy {project.source_path} -> {project.path} ({size}), verified"))
        steps.append(("migrate_attach", f"attach {project.path} to {facts.target} as {new_uid} (was {project.uid} "
                                        f"on {facts.source}; {size})"))
        chain: list[Action] = []
        for kind, reason in steps:
            chain.append(Action.create(address=address, kind=kind, reason=reason, facts=basis, details=details,
                                       depends_on=[chain[-1].id] if chain else [*facts.prerequisites, *waits]))
        diff.actions.extend(chain)
    if mapping:
        diff.notes.append(AddressMessage(address=f"instance:{facts.target}", message=(
            f"migration from {facts.source}, uid map (old -> new, path, size): " + "; ".join(mapping))))
    return diff

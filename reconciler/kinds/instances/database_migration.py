"""Whole-instance migration, the CryoSPARC guide's alternative A (``migration = "database"``):
the source's database becomes the target's, and project directories follow.

Steps (addresses ``migration:<target>/database`` and ``migration:<target>/<uid>``):

1. freeze: with the ``cryosparcm`` driver on the source, ``maintenance_on`` puts it in
   maintenance mode first (the guide's ``cryosparcm maintenancemode on``: queued jobs are not
   launched, running ones finish; it stays on, the source is retired); nothing else happens
   while a job of the source is queued or running (the plan waits). The ``mongo`` driver has
   no maintenance mode to set (it is a command of the installation, and the guide does not say
   where the flag is kept): the plan only waits;
2. ``migrate_archive`` on the source for every active project whose path changes
   (``migrate_paths``): the guide's rule, archive before a path changes;
3. ``copy_database``: a consistent copy of every collection (one snapshot read session on the
   replica set) inserted into the target's database, which must hold no project (a uid that
   exists on both is an error naming it); a copy cut short is dropped and made again;
4. per moved project: ``migrate_copy`` (rsync, verified) -> ``repoint`` (project_dir and Live
   session directories rewritten on the target, records exported there, cs.lock for the
   target) -> ``migrate_unarchive`` for those step 2 archived; a project that keeps its path
   gets ``relock`` (cs.lock for the target);
5. the target's users and lanes are reconciled after the copy (they depend on it).

The rollback rule (providers/cryosparc/rollback.py): once the copy is made, a source project
whose exported records changed after it refuses the migration, naming the projects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import select

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff, RunContext
from reconciler.errors import ApplyError, ReconcilerError
from reconciler.kinds.instances.migration import ImportedFrom, InstancePair, migration_address, new_path
from reconciler.kinds.instances.tables import CopiedDatabase, MigratedProject
from reconciler.providers.cryosparc import model, rollback
from reconciler.providers.cryosparc.copy import summarize_tree
from reconciler.providers.cryosparc.readers import Readers
from reconciler.units import human_bytes


@dataclass
class DatabaseProject:
    uid: str
    source_path: str
    path: str
    archived: bool
    detached: bool
    lock: str | None = None  # cs.lock of the directory it must end up in
    files: int | None = None
    bytes: int | None = None
    target: dict[str, Any] | None = None  # project_dir, archived on the target (after the copy)
    archived_by_migration: bool = False
    copied: bool = False


@dataclass
class DatabaseMigrationFacts:
    target: str
    source: str
    source_id: str
    target_id: str
    target_uids: list[str] = field(default_factory=list)  # projects on the target before the copy
    busy: list[str] = field(default_factory=list)  # "P3/J7": queued or running on the source
    copy_started: str | None = None  # ISO time of the snapshot (a copy began)
    copy_done: bool = False
    newer: str | None = None  # source projects changed after the copy (the rollback rule)
    maintenance: bool | None = None  # the source's maintenance mode (None: not a cryosparcm source, or copied)
    maintenance_error: str | None = None  # `cryosparcm maintenancemode status` failed
    projects: list[DatabaseProject] = field(default_factory=list)


class CopyDatabaseDetails(InstancePair):
    """A ``copy_database``: the source's whole database copied into the target's (alternative A)."""


class ProjectStepDetails(InstancePair):
    """A ``migrate_archive`` (alternative A), and the base of its per-project steps: source
    project ``uid``, its directory ``source_path`` and the one it ends up in, ``path``."""

    uid: str
    source_path: str
    path: str


class MovedProjectDetails(ProjectStepDetails):
    """A ``migrate_copy``, ``repoint``, ``migrate_unarchive`` or ``relock`` of alternative A (a
    project's steps share one details), with the project's size as observed (None: not measured)."""

    files: int | None
    bytes: int | None


class MigrateCopyDetails(MovedProjectDetails):
    """How a ``migrate_copy`` is read: alternative A plans it with MovedProjectDetails, alternative B
    with AttachMigrationDetails (whose attach fields the copy does not use)."""

    new_uid: str | None = None
    owner_email: str | None = None
    imported_from: ImportedFrom | None = None


def database_address(target: str) -> str:
    return migration_address(target, "database")


def observe_database_migration(desired: Any, target: str, readers: Readers, ctx: RunContext) -> DatabaseMigrationFacts:
    config = desired.instances[target]
    source = str(config.migrate_from)
    source_db, target_db = readers.get(source).db, readers.get(target).db
    facts = DatabaseMigrationFacts(target=target, source=source, source_id=desired.instances[source].instance_id,
                                   target_id=config.instance_id)
    with ctx.state.session() as session:
        copy = session.get(CopiedDatabase, (target, source))
        rows = {row.source_uid: row for row in session.exec(
            select(MigratedProject).where(MigratedProject.target == target, MigratedProject.source == source))}
    documents = sorted(source_db[model.PROJECTS].find({"deleted": {"$ne": True}}),
                       key=lambda doc: model.uid_number(doc["uid"]))
    if copy is None:
        facts.target_uids = sorted((str(doc["uid"]) for doc in target_db[model.PROJECTS].find({}, {"uid": 1})),
                                   key=model.uid_number)
    else:
        facts.copy_started, facts.copy_done = copy.started_at.isoformat(), copy.copied_at is not None
        taken = copy.started_at if copy.started_at.tzinfo else copy.started_at.replace(tzinfo=UTC)
        found = rollback.newer_projects(documents, taken)
        facts.newer = rollback.describe(found) if found else None
    source_config = desired.instances[source]
    if source_config.driver == "cryosparcm" and not facts.copy_done:
        from reconciler.providers.cryosparc.drivers import cryosparcm

        try:
            output = cryosparcm.run_argv(cryosparcm.maintenance_argv(source_config.cryosparcm, "status"),
                                         f"cryosparcm maintenancemode status on {source}")
            facts.maintenance = cryosparcm.maintenance_is_on(output)
        except (ReconcilerError, ValueError) as error:
            facts.maintenance_error = str(error)
    facts.busy = [f"{job['project_uid']}/{job['uid']}" for job in source_db[model.JOBS].find(
        {"status": {"$in": list(model.BUSY_STATUSES)}}, {"project_uid": 1, "uid": 1})]
    for document in documents:
        uid, source_path = str(document["uid"]), str(document.get("project_dir") or "")
        row = rows.get(uid)
        path = new_path(source_path, config.migrate_paths)
        item = DatabaseProject(uid=uid, source_path=source_path, path=path, archived=bool(document.get("archived")),
                               detached=bool(document.get("detached")),
                               archived_by_migration=bool(row and row.archived_at),
                               copied=bool(row and row.copied_at))
        if Path(path).is_dir():
            item.lock = model.read_lock(Path(path))
        if Path(source_path).is_dir():
            summary = summarize_tree(Path(source_path))
            item.files, item.bytes = summary.files, summary.bytes
        if facts.copy_done:
            on_target = target_db[model.PROJECTS].find_one({"uid": uid})
            if on_target is not None:
                item.target = {"project_dir": str(on_target.get("project_dir") or ""),
                               "archived": bool(on_target.get("archived"))}
        facts.projects.append(item)
    return facts


def _action(address: str, kind: str, reason: str, basis: Any, details: Details,
            depends: list[str]) -> Action:
    return Action.create(address=address, kind=kind, reason=reason, facts=basis, details=details, depends_on=depends)


def diff_database_migration(facts: DatabaseMigrationFacts) -> Diff:
    """The steps of alternative A that remain (pure)."""
    diff = Diff()
    database = database_address(facts.target)
    basis = asdict(facts)
    base = CopyDatabaseDetails(source=facts.source, target=facts.target)
    if not facts.copy_done:
        if facts.target_uids:
            diff.errors.append(AddressMessage(address=database, message=(
                f'migration = "database" copies {facts.source}\'s database into {facts.target}\'s, which already '
                f"holds {', '.join(facts.target_uids)} (uid clash); use an empty database for [instances."
                f'{facts.target}] or migration = "attach"')))
            return diff
        if facts.maintenance_error:
            diff.errors.append(AddressMessage(address=database, message=(
                f"cannot tell whether {facts.source} is in maintenance mode: {facts.maintenance_error}; check "
                f"[instances.{facts.source}] cryosparcm")))
            return diff
        freeze: list[str] = []
        if facts.maintenance is False:
            maintenance = _action(database, "maintenance_on", f"put {facts.source} in maintenance mode (cryosparcm "
                                  "maintenancemode on): queued jobs are not launched, running ones finish", basis,
                                  base, [])
            diff.actions.append(maintenance)
            freeze = [maintenance.id]
        if facts.busy:
            hint = ("it is in maintenance mode, where queued jobs never start: kill or clear them" if
                    facts.maintenance is not None else "with the cryosparcm driver it is put in maintenance mode")
            diff.notes.append(AddressMessage(address=database, message=(
                f"waiting: jobs {', '.join(facts.busy[:10])} on {facts.source} are queued or running; the database "
                f"is copied once the source is idle ({hint})")))
            return diff
        if facts.newer and facts.copy_started:
            diff.errors.append(AddressMessage(address=database, message=(
                f"refusing to finish the database copy begun at {facts.copy_started}: {facts.newer}")))
            return diff
        archives = []
        for project in facts.projects:
            if project.path != project.source_path and not project.archived and not project.detached:
                archives.append(_action(
                    migration_address(facts.target, project.uid), "migrate_archive",
                    f"archive {project.uid} on {facts.source} before its path changes to {project.path}", basis,
                    ProjectStepDetails(source=facts.source, target=facts.target, uid=project.uid,
                                       source_path=project.source_path, path=project.path), freeze))
        diff.actions.extend(archives)
        diff.actions.append(_action(database, "copy_database",
                                    f"copy {facts.source}'s database into {facts.target}'s (a consistent snapshot)",
                                    basis, base, [*freeze, *(action.id for action in archives)]))
    elif facts.newer:
        diff.errors.append(AddressMessage(address=database, message=(
            f"refusing to go on: {facts.source}'s database was copied at {facts.copy_started}, but {facts.newer}; "
            f"the copy is outdated. Drop {facts.target}'s database, forget the copy (its row in "
            "instance_database_copies) and migrate again")))
        return diff
    for project in facts.projects:
        if project.detached:
            continue
        address = migration_address(facts.target, project.uid)
        details = MovedProjectDetails(source=facts.source, target=facts.target, uid=project.uid,
                                      source_path=project.source_path, path=project.path, files=project.files,
                                      bytes=project.bytes)
        chain: list[Action] = []
        depends = [database]
        moved = project.target is not None and project.target["project_dir"] == project.path
        if project.path != project.source_path:
            size = (f"{project.files:,} files, {human_bytes(project.bytes or 0)}" if project.files is not None
                    else "size unknown")
            if not project.copied and not moved:
                chain.append(_action(address, "migrate_copy", f"copy {project.source_path} -> {project.path} "
                                                               f"({size}), verified", basis, details, depends))
            if not moved:
                chain.append(_action(address, "repoint", f"point {project.uid} on {facts.target} at {project.path}",
                                     basis, details, [chain[-1].id] if chain else depends))
            archived_now = not facts.copy_done and not project.archived  # archived by this plan
            unarchive = (project.archived_by_migration or archived_now) and (
                project.target is None or project.target["archived"])
            if unarchive:
                chain.append(_action(address, "migrate_unarchive", f"unarchive {project.uid} on {facts.target}",
                                     basis, details, [chain[-1].id] if chain else depends))
        if project.lock != facts.target_id and (moved or project.path == project.source_path) and not chain:
            chain.append(_action(address, "relock", f"cs.lock of {project.path} for {facts.target}", basis,
                                 details, depends))
        diff.actions.extend(chain)
    return diff


def copy_database(source_db: Any, target_db: Any) -> int:
    """Copy every collection of ``source_db`` into ``target_db`` from one snapshot (consistent
    across collections); returns the number of documents. Raises ApplyError when the server
    cannot give a snapshot (not a replica set) or a write fails."""
    from pymongo.errors import PyMongoError

    count = 0
    try:
        # listCollections takes no snapshot read concern; the source is frozen, so its set of
        # collections does not change, and every document is read from one snapshot
        names = sorted(name for name in source_db.list_collection_names() if not name.startswith("system."))
        with source_db.client.start_session(snapshot=True) as session:
            for name in names:
                batch: list[dict[str, Any]] = []
                for document in source_db[name].find({}, session=session):
                    batch.append(document)
                    if len(batch) >= 1000:
                        target_db[name].insert_many(batch, ordered=True)
                        count, batch = count + len(batch), []
                if batch:
                    target_db[name].insert_many(batch, ordered=True)
                    count += len(batch)
    except PyMongoError as error:
        message = str(error).splitlines()[0].split(", full error")[0]
        raise ApplyError(f"copying the database failed: {message} (a consistent copy needs the "
                         "source's MongoDB to run as a replica set, as CryoSPARC's does)") from None
    return count


def now() -> datetime:
    return datetime.now(UTC)

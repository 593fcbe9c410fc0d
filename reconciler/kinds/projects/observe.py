"""Reading projects: documents on each instance, directories, locks, exported records,
and the copies the state store remembers. Every read of the world for this kind is here."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlmodel import select

from reconciler.engine.actions import AddressMessage
from reconciler.engine.kind import Observation, RunContext
from reconciler.engine.planner import matches_target
from reconciler.errors import ObserveError
from reconciler.kinds.projects.diff import DirFacts, DocFacts, ProjectFacts, project_address
from reconciler.kinds.projects.tables import ProjectCopy
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.copy import summarize_tree
from reconciler.providers.cryosparc.drivers.mongo import MongoDriver
from reconciler.providers.cryosparc.readers import Readers, find_imported


def doc_facts(reader: MongoDriver, document: dict[str, Any] | None) -> DocFacts | None:
    if document is None:
        return None
    uid = str(document.get("uid"))
    detached = bool(document.get("detached"))
    return DocFacts(uid=uid, title=str(document.get("title", "")), project_dir=str(document.get("project_dir", "")),
                    archived=bool(document.get("archived")), detached=detached,
                    deleted=bool(document.get("deleted")), attaching=bool(document.get(model.ATTACHING)),
                    busy_jobs=[] if detached else reader.busy_jobs(uid))


def dir_facts(path: str, measure: bool = False) -> DirFacts:
    """Existence, lock owner and records of a directory. Raises ObserveError for unreadable
    or corrupt records (missing project.json, bad JSON, a job.json of another job)."""
    directory = Path(path)
    if not directory.is_dir():
        return DirFacts(path=path, exists=False)
    try:
        with os.scandir(directory) as entries:
            empty = next(entries, None) is None
    except PermissionError:
        raise ObserveError(f"{path} is not readable (permission denied)") from None
    facts = DirFacts(path=path, exists=True, empty=empty, lock=model.read_lock(directory))
    if empty:
        return facts
    if (directory / model.PROJECT_FILE).exists() or model.job_dirs(directory):
        try:
            records = model.read_records(directory)
        except model.RecordsError as error:
            raise ObserveError(str(error)) from None
        facts.records_uid = str(records.project.get("uid"))
    if measure:
        summary = summarize_tree(directory)
        facts.files, facts.bytes = summary.files, summary.bytes
    return facts


def observe_bundle_project(name: str, project: Any, desired: Any, readers: Readers) -> ProjectFacts:
    """A project declared with source = "bundle:…": on its instance already (found by its
    ``imported_from``), or to be imported."""
    from reconciler.kinds.projects.bundle import BundleError, read_header

    try:
        header = read_header(Path(project.bundle))
    except BundleError as error:
        raise ObserveError(str(error)) from None
    source_id = header.source_instance.get("instance_id", "")
    facts = ProjectFacts(
        name=name, uid=header.project_uid, source_instance=project.instance, instance=project.instance,
        path=project.path, state=project.state, force=project.force,
        instance_ids={key: value.instance_id for key, value in desired.instances.items()},
        instance_databases={key: value.database for key, value in desired.instances.items()},
        bundle={"path": project.bundle, "instance_id": source_id, "uid": header.project_uid,
                "instance": header.source_instance.get("name", "?")})
    target = readers.get(project.instance)
    imported = find_imported(target, source_id, header.project_uid)
    if imported is not None and not imported.get(model.ATTACHING):
        found = doc_facts(target, imported)
        assert found is not None  # imported is a document
        facts.source_doc, facts.uid = found, found.uid
    else:
        facts.target_uid = str(imported["uid"]) if imported is not None else target.next_free_uid()
        facts.copy_started = imported is not None  # an import killed half-way: its directory is ours
    return facts


def observe_project(name: str, project: Any, desired: Any, readers: Readers, ctx: RunContext) -> ProjectFacts:
    if project.source is not None:
        facts = observe_bundle_project(name, project, desired, readers)
        doc = facts.source_doc
        if doc is None:
            facts.desired_dir = dir_facts(project.path)
            return facts
        return _observe_dirs(facts, doc, project, ctx, name)
    facts = ProjectFacts(
        name=name, uid=project.uid, source_instance=project.source_instance, instance=project.instance,
        path=project.path, state=project.state, force=project.force,
        instance_ids={key: value.instance_id for key, value in desired.instances.items()},
        instance_databases={key: value.database for key, value in desired.instances.items()})
    source = readers.get(project.source_instance)
    facts.source_doc = doc_facts(source, source.project(project.uid))
    if facts.source_instance != facts.instance:
        target = readers.get(project.instance)
        imported = find_imported(target, facts.instance_ids[facts.source_instance], project.uid)
        facts.target_doc = doc_facts(target, imported)
        if imported is not None and imported.get(model.ATTACHING):
            facts.target_uid = str(imported["uid"])
        elif imported is None:
            facts.target_uid = project.uid if target.project(project.uid) is None else target.next_free_uid()
    doc = facts.target_doc if facts.target_doc and not facts.target_doc.attaching else facts.source_doc
    return _observe_dirs(facts, doc, project, ctx, name)


def _observe_dirs(facts: ProjectFacts, doc: DocFacts | None, project: Any, ctx: RunContext,
                  name: str) -> ProjectFacts:
    if doc is not None:
        moving = doc.project_dir != project.path
        facts.current_dir = dir_facts(doc.project_dir, measure=moving)
        if not facts.current_dir.exists and not doc.detached and not moving:
            raise ObserveError(f"the directory of {doc.uid}, {doc.project_dir}, is missing")
    same_place = doc is not None and facts.current_dir is not None and project.path == doc.project_dir
    facts.desired_dir = facts.current_dir if same_place and facts.current_dir is not None else dir_facts(project.path)
    with ctx.state.session() as session:
        rows = session.exec(select(ProjectCopy).where(ProjectCopy.project == name)).all()
    current = doc.project_dir if doc else None
    facts.copy_started = any(row.source == current and row.destination == project.path for row in rows)
    facts.leftovers = sorted(row.source for row in rows if row.verified_at and row.removed_at is None
                             and row.destination == current and Path(row.source).exists())
    return facts


def observe_projects(desired: Any, ctx: RunContext) -> Observation:
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    facts: list[ProjectFacts] = []
    errors: list[AddressMessage] = []
    with ExitStack() as stack:
        readers = Readers(desired, stack)
        for name, project in desired.projects.items():
            address = project_address(name)
            if ctx.targets and not matches_target(address, ctx.targets):
                continue
            try:
                facts.append(observe_project(name, project, desired, readers, ctx))
            except ObserveError as error:
                errors.append(AddressMessage(address=address, message=str(error)))
            except PyMongoError as error:
                errors.append(AddressMessage(address=address, message=f"reading the instance failed: {error}"))
            except OSError as error:
                errors.append(AddressMessage(address=address, message=f"{error.filename}: {error.strerror}"))
    return Observation(facts=facts, errors=errors)

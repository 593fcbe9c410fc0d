"""The projects planner: pure functions from observed projects to ordered steps.

Same instance, new path (the guide's alternative A): archive -> copy (verified) ->
update_path -> unarchive -> remove_old (destructive). Another instance (alternative
B): detach on the source -> copy when the path changes -> attach on the target
(new uid when taken) -> archive when desired -> remove_old. State changes alone:
archive, unarchive, detach, attach. Each step depends on the one before it, so a
failed step stops the project's chain and the next run continues from the real state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff
from reconciler.units import human_bytes


@dataclass
class DocFacts:
    """A project document on an instance."""

    uid: str
    title: str
    project_dir: str
    archived: bool
    detached: bool
    deleted: bool
    attaching: bool = False  # an attach by reconciler was interrupted half-way
    busy_jobs: list[str] = field(default_factory=list)


@dataclass
class DirFacts:
    """A directory where a project lives or must live."""

    path: str
    exists: bool
    empty: bool = True
    lock: str | None = None
    records_uid: str | None = None
    files: int | None = None
    bytes: int | None = None


@dataclass
class ProjectFacts:
    name: str
    uid: str
    source_instance: str
    instance: str
    path: str
    state: str
    force: bool
    instance_ids: dict[str, str]
    instance_databases: dict[str, str]
    source_doc: DocFacts | None = None
    target_doc: DocFacts | None = None  # migrating: the document imported from the source
    target_uid: str | None = None  # migrating: the uid an attach would give it on the target
    current_dir: DirFacts | None = None
    desired_dir: DirFacts | None = None
    copy_started: bool = False  # the state store knows a copy current -> desired began
    bundle: dict[str, str] | None = None  # source = "bundle:…": path, source instance id, source uid
    leftovers: list[str] = field(default_factory=list)  # old directories of finished moves, verified, still there


class ImportedFrom(Details):
    """Which project of which instance a migrated or imported project came from."""

    instance_id: str
    uid: str


class OnInstance(Details):
    """An ``archive`` or ``detach``: a project on an instance (found by ``imported_from`` when
    CryoSPARC may have given it another uid than planned)."""

    instance: str
    uid: str
    imported_from: ImportedFrom | None = None


class UnarchiveDetails(OnInstance):
    """An ``unarchive``: the project, and the directory it is unarchived from."""

    path: str


class UpdatePathDetails(OnInstance):
    """An ``update_path``: the project's directory from ``old`` to ``path`` (a verified copy)."""

    path: str
    old: str


class AttachDetails(OnInstance):
    """An ``attach`` of ``path`` to the instance (again, when ``reattach``)."""

    path: str
    reattach: bool = False
    force: bool = False


class CopyDetails(Details):
    """A ``copy`` of a project directory, with its size when it was measured."""

    source: str
    destination: str
    file_count: int | None = None
    bytes: int | None = None


class ImportDetails(Details):
    """An ``import`` of a bundle into ``path`` on the instance, as ``uid``."""

    bundle: str
    instance: str
    uid: str
    path: str


class RemoveOldDetails(Details):
    """A ``remove_old``: the old directory ``path``, whose verified copy is ``copy``."""

    path: str
    copy_: str = Field(alias="copy")


def project_address(name: str) -> str:
    return f"project:{name}"


def _inside(inner: str, outer: str) -> bool:
    return inner != outer and Path(inner).is_relative_to(outer)


class _Chain:
    """Builds one project's steps, each depending on the one before."""

    def __init__(self, facts: ProjectFacts):
        self.facts = facts
        self.address = project_address(facts.name)
        self.actions: list[Action] = []
        self.basis = {key: value for key, value in asdict(facts).items() if key != "leftovers"}
        for key in ("current_dir", "desired_dir"):
            if self.basis.get(key):
                self.basis[key] = {k: v for k, v in self.basis[key].items() if k not in ("files", "bytes")}

    def add(self, kind: str, reason: str, details: dict[str, Any], destructive: bool = False,
            before: list[str] | None = None, chained: bool = True) -> None:
        depends = [self.actions[-1].id] if chained and self.actions else []
        self.actions.append(Action.create(address=self.address, kind=kind, reason=reason, facts=self.basis,
                                          details=details, destructive=destructive, depends_on=depends,
                                          before=before))


def _copy_details(facts: ProjectFacts, source: str) -> tuple[str, dict[str, Any]]:
    current = facts.current_dir
    details: dict[str, Any] = {"source": source, "destination": facts.path}
    size = ""
    if current and current.files is not None:
        details.update({"file_count": current.files, "bytes": current.bytes})
        size = f" ({current.files:,} files, {human_bytes(current.bytes or 0)})"
    return f"copy {source} -> {facts.path}{size}, verified before anything points at it", details


def _copy_needed(facts: ProjectFacts) -> bool | str:
    """True when the directory must be copied; False when only the copy is left (the old
    directory is gone and the new one holds the project's records); a problem otherwise."""
    if facts.current_dir is not None and facts.current_dir.exists:
        return True
    if facts.desired_dir is not None and facts.desired_dir.records_uid is not None:
        return False
    current = facts.current_dir.path if facts.current_dir else "?"
    return f"neither the project directory {current} nor {facts.path} exists"


def _add_copy(facts: ProjectFacts, chain: _Chain | None, current: str) -> str | None:
    """Add the copy step to ``chain`` when one is needed (``chain`` None: only check).
    Returns the problem that makes the move impossible, if any."""
    needed = _copy_needed(facts)
    if isinstance(needed, str):
        return needed
    problem = _destination_problem(facts) if needed else None
    if problem or not needed or chain is None:
        return problem
    reason, details = _copy_details(facts, current)
    chain.add("copy", reason, details)
    return None


def _destination_problem(facts: ProjectFacts) -> str | None:
    desired = facts.desired_dir
    if desired is None or not desired.exists or desired.empty or facts.copy_started:
        return None
    if desired.records_uid and desired.lock in (None, facts.instance_ids.get(facts.instance)):
        return None  # a copy of this project made earlier (e.g. by hand): rsync completes it
    return (f"{facts.path} already exists and holds other data; reconciler copies only into a new or empty "
            "directory (or one it began copying into)")


def diff_project(facts: ProjectFacts) -> Diff:
    """The steps that bring one project to its declared instance, path and state."""
    diff = Diff()
    address = project_address(facts.name)
    if facts.bundle is not None and facts.source_doc is None:
        return _plan_import(facts)
    migrating = facts.source_instance != facts.instance
    arrived = migrating and facts.target_doc is not None and not facts.target_doc.attaching
    doc = facts.target_doc if arrived else facts.source_doc
    here = facts.instance if arrived or not migrating else facts.source_instance
    if doc is None:
        diff.errors.append(AddressMessage(address=address, message=(
            f"no project {facts.uid} on instance {facts.source_instance}"
            + (f" and none imported from it on {facts.instance}" if migrating else "")
            + "; check uid and from")))
        return diff
    if doc.deleted:
        diff.errors.append(AddressMessage(address=address, message=f"{doc.uid} on {here} is deleted"))
        return diff
    current = doc.project_dir
    path_change = current != facts.path
    if path_change and (_inside(facts.path, current) or _inside(current, facts.path)):
        diff.errors.append(AddressMessage(address=address, message=(
            f"path {facts.path} and the current directory {current} contain one another; choose a path outside")))
        return diff
    chain = _Chain(facts)
    database = facts.instance_databases.get(here)
    archive_before = [f"database:{database}"] if database else []
    base = {"instance": here, "uid": doc.uid}
    if migrating and not arrived:
        problem = _plan_migration(facts, doc, chain)
    else:
        problem = _plan_in_place(facts, doc, here, base, archive_before, chain)
    if problem:
        diff.errors.append(AddressMessage(address=address, message=problem))
        return diff
    if chain.actions and doc.busy_jobs and not doc.detached:
        diff.notes.append(AddressMessage(address=address, message=(
            f"waiting: jobs {', '.join(doc.busy_jobs)} of {doc.uid} on {here} are queued or running; "
            f"it is not archived, detached or moved until they finish")))
        return diff
    old_exists = facts.current_dir is not None and facts.current_dir.exists
    if chain.actions and path_change and old_exists and not (migrating and facts.state == "detached"):
        chain.add("remove_old", f"remove the old directory {current} (its copy at {facts.path} was verified)",
                  {"path": current, "copy": facts.path}, destructive=True)
    for leftover in facts.leftovers:
        if leftover not in (current, facts.path):
            chain.add("remove_old", f"remove the old directory {leftover} (its copy at {current} was verified)",
                      {"path": leftover, "copy": current}, destructive=True, chained=False)
    diff.actions.extend(chain.actions)
    return diff


def _lock_problem(facts: ProjectFacts, directory: DirFacts | None, allowed: set[str | None]) -> str | None:
    if directory is None or directory.lock in allowed or facts.force:
        return None
    names = {value: key for key, value in facts.instance_ids.items()}
    owner = names.get(directory.lock or "", directory.lock)
    return (f"{directory.path}/cs.lock belongs to instance {owner}; it is attached there. Detach it there "
            "first, or set force = true on this project if that instance no longer exists")


def _plan_in_place(facts: ProjectFacts, doc: DocFacts, here: str, base: dict[str, Any],
                   archive_before: list[str], chain: _Chain) -> str | None:
    current = doc.project_dir
    path_change = current != facts.path
    own_id = facts.instance_ids.get(here)
    if doc.detached:
        if facts.state == "detached":
            if path_change:
                return (f"{doc.uid} is detached: its directory moves only with an attach; set state = \"active\" "
                        "or \"archived\" (or move the detached directory yourself)")
            return None
        attach_dir = facts.desired_dir if path_change else facts.current_dir
        problem = _lock_problem(facts, attach_dir if attach_dir and attach_dir.exists else facts.current_dir,
                                {None, own_id})
        if problem:
            return problem
        if path_change:
            problem = _add_copy(facts, chain, current)
            if problem:
                return problem
        chain.add("attach", f"attach {facts.path} to {here} again as {doc.uid}",
                  {**base, "path": facts.path, "reattach": True, "force": facts.force})
        if facts.state == "archived":
            chain.add("archive", "desired state is archived", base, before=archive_before)
        return None
    if path_change:
        problem = _add_copy(facts, None, current)  # checked first: nothing is archived for a copy that cannot be made
        if problem:
            return problem
        by_hand = _copy_needed(facts) is False  # the directory was moved by hand: only the document follows
        archived = doc.archived
        if not archived and not by_hand:
            chain.add("archive", f"archive before its directory moves to {facts.path} (the CryoSPARC guide: "
                                 "archive before a project's path changes)", base, before=archive_before)
            archived = True
        _add_copy(facts, chain, current)
        chain.add("update_path", f"point {doc.uid} at {facts.path}" + (
            f" ({current} is gone; {facts.path} holds the project's records)" if by_hand else ""),
            {**base, "path": facts.path, "old": current})
        if facts.state == "active" and archived:
            chain.add("unarchive", "desired state is active", {**base, "path": facts.path})
        elif facts.state == "archived" and not archived:
            chain.add("archive", "desired state is archived", base, before=archive_before)
        elif facts.state == "detached":
            chain.add("detach", "desired state is detached", base)
        return None
    if facts.state == "archived" and not doc.archived:
        chain.add("archive", "desired state is archived", base, before=archive_before)
    elif facts.state == "active" and doc.archived:
        chain.add("unarchive", "desired state is active", {**base, "path": current})
    elif facts.state == "detached":
        chain.add("detach", f"desired state is detached (export records, remove cs.lock, mark detached on {here})",
                  base)
    return None


def _plan_migration(facts: ProjectFacts, doc: DocFacts, chain: _Chain) -> str | None:
    source, target = facts.source_instance, facts.instance
    source_id, target_id = facts.instance_ids.get(source), facts.instance_ids.get(target)
    current = doc.project_dir
    path_change = current != facts.path
    if not doc.detached:
        problem = _lock_problem(facts, facts.current_dir, {None, source_id})
        if problem:
            return problem
        chain.add("detach", f"detach {doc.uid} from {source} (export records, remove cs.lock) to move it to {target}",
                  {"instance": source, "uid": doc.uid})
    if path_change:
        problem = _add_copy(facts, chain, current)
        if problem:
            return problem
    if facts.state == "detached":
        return None
    attach_dir = facts.desired_dir if path_change else facts.current_dir
    allowed: set[str | None] = {None, target_id} | ({source_id} if not doc.detached else set())
    problem = _lock_problem(facts, attach_dir if attach_dir and attach_dir.exists else None, allowed)
    if problem:
        return problem
    uid = facts.target_uid or doc.uid
    clash = f" ({doc.uid} is taken there)" if uid != doc.uid else ""
    imported_from = {"instance_id": source_id or source, "uid": doc.uid}
    chain.add("attach", f"attach {facts.path} to {target} as {uid}{clash}; {source}'s document stays, detached",
              {"instance": target, "uid": uid, "path": facts.path, "imported_from": imported_from,
               "force": facts.force})
    if facts.state == "archived":
        database = facts.instance_databases.get(target)
        chain.add("archive", "desired state is archived", {"instance": target, "uid": uid,
                                                            "imported_from": imported_from},
                  before=[f"database:{database}"] if database else [])
    return None


def _plan_import(facts: ProjectFacts) -> Diff:
    """A project declared from a bundle and not on its instance yet: import it."""
    diff = Diff()
    bundle = facts.bundle or {}
    desired = facts.desired_dir
    if desired is not None and desired.exists and not desired.empty and not facts.copy_started:
        diff.errors.append(AddressMessage(address=project_address(facts.name), message=(
            f"{facts.path} exists and is not empty; a bundle is imported only into a new directory")))
        return diff
    chain = _Chain(facts)
    imported_from = {"instance_id": bundle.get("instance_id", ""), "uid": bundle.get("uid", "")}
    chain.add("import", f"import {bundle.get('path')} ({bundle.get('uid')} from {bundle.get('instance')}) into "
                        f"{facts.instance} as {facts.target_uid} at {facts.path}",
              {"bundle": bundle.get("path"), "instance": facts.instance, "uid": facts.target_uid, "path": facts.path})
    if facts.state == "archived":
        database = facts.instance_databases.get(facts.instance)
        chain.add("archive", "desired state is archived", {"instance": facts.instance, "uid": facts.target_uid,
                                                            "imported_from": imported_from},
                  before=[f"database:{database}"] if database else [])
    elif facts.state == "detached":
        chain.add("detach", "desired state is detached", {"instance": facts.instance, "uid": facts.target_uid,
                                                           "imported_from": imported_from})
    diff.actions.extend(chain.actions)
    return diff

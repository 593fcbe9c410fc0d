"""The projects resource kind: CryoSPARC project directories on instances, in declared
places and states (observe.py reads, diff.py plans, the executors below act through
a driver: drivers/mongo.py or drivers/cryosparcm.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from reconciler.engine.actions import Action
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, RunContext, executor
from reconciler.engine.memo import Memo
from reconciler.errors import ApplyError
from reconciler.kinds.projects.config import ProjectConfig, check_projects
from reconciler.kinds.projects.diff import (
    AttachDetails,
    CopyDetails,
    ImportDetails,
    OnInstance,
    RemoveOldDetails,
    UnarchiveDetails,
    UpdatePathDetails,
    diff_project,
    project_address,
)
from reconciler.kinds.projects.observe import observe_projects
from reconciler.kinds.projects.tables import BundleImport, ProjectCopy
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.config import INSTANCES_SECTION
from reconciler.providers.cryosparc.copy import copy_project
from reconciler.providers.cryosparc.drivers import open_driver, open_reader
from reconciler.providers.cryosparc.readers import find_imported
from reconciler.providers.mongo.config import DATABASES_SECTION
from reconciler.units import human_bytes


def _now() -> datetime:
    return datetime.now(UTC)


class ProjectsKind(Kind):
    name = "projects"
    address_prefix = "project"
    sections = {
        **DATABASES_SECTION,
        **INSTANCES_SECTION,
        "projects": (dict[str, ProjectConfig],
                     Field(default_factory=dict,
                           description="Where each project lives, on which instance, in which state.")),
    }
    tables = [ProjectCopy, BundleImport]

    def addresses(self, desired: Any) -> list[str]:
        return [project_address(name) for name in desired.projects]

    def check(self, desired: Any, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        return check_projects(desired)

    def observe(self, desired: Any, ctx: RunContext) -> Observation:
        if not desired.projects:
            return Observation(facts=[], memo=Memo())  # nothing declared: nothing a no-change memo need check
        return observe_projects(desired, ctx)

    def diff(self, desired: Any, observation: Observation) -> Diff:
        combined = Diff()
        for facts in observation.facts or []:
            combined.extend(diff_project(facts))
        return combined

    # -- executors -------------------------------------------------------------------------------

    @staticmethod
    def _uid(driver: Any, details: OnInstance) -> str:
        """The project's uid on the action's instance: for a migrated project, looked up by its
        ``imported_from`` record (CryoSPARC may have assigned another uid than planned)."""
        imported = details.imported_from
        if imported:
            found = find_imported(driver.reader, imported.instance_id, imported.uid)
            if found is None:
                raise ApplyError(f"no project imported from {imported.uid} on {details.instance}; run plan again")
            return str(found["uid"])
        return details.uid

    def _on_instance(self, details: OnInstance, ctx: RunContext, operation: Callable[[Any, str], None]) -> str:
        """Run ``operation(driver, uid)`` on the action's instance; returns the uid it acted on."""
        with open_driver(ctx.desired, details.instance) as driver:
            uid = self._uid(driver, details)
            operation(driver, uid)
        return uid

    @executor("archive")
    def archive(self, action: Action, ctx: RunContext) -> str:
        details = OnInstance.of(action)
        uid = self._on_instance(details, ctx, lambda driver, uid: driver.archive(uid))
        return f"archived {uid} on {details.instance}"

    @executor("unarchive")
    def unarchive(self, action: Action, ctx: RunContext) -> str:
        details = UnarchiveDetails.of(action)
        uid = self._on_instance(details, ctx, lambda driver, uid: driver.unarchive(uid, details.path))
        return f"unarchived {uid} on {details.instance}"

    @executor("detach")
    def detach(self, action: Action, ctx: RunContext) -> str:
        details = OnInstance.of(action)
        uid = self._on_instance(details, ctx, lambda driver, uid: driver.detach(uid))
        return f"detached {uid} from {details.instance}"

    @executor("copy")
    def copy(self, action: Action, ctx: RunContext) -> str:
        planned = CopyDetails.of(action)
        source, destination = planned.source, planned.destination
        if not Path(source).is_dir():
            raise ApplyError(f"{source} does not exist any more; run plan again")
        name = action.address.split(":", 1)[1]
        with ctx.state.session() as session:
            row = session.get(ProjectCopy, (source, destination))
            if row is None:
                session.add(ProjectCopy(source=source, destination=destination, project=name, started_at=_now()))
                session.commit()
        summary, digest = copy_project(Path(source), Path(destination),
                                       lambda done, total: ctx.progress(f"copy {name}", done, total))
        with ctx.state.session() as session:
            row = session.get(ProjectCopy, (source, destination))
            assert row is not None
            row.verified_at, row.files, row.bytes, row.records_sha256 = _now(), summary.files, summary.bytes, digest
            row.removed_at = None
            session.add(row)
            session.commit()
        return f"copied and verified {summary.files:,} files, {human_bytes(summary.bytes)}"

    @staticmethod
    def _verified(ctx: RunContext, source: str, destination: str) -> ProjectCopy | None:
        with ctx.state.session() as session:
            row = session.get(ProjectCopy, (source, destination))
            return row if row is not None and row.verified_at is not None else None

    @executor("update_path")
    def update_path(self, action: Action, ctx: RunContext) -> str:
        details = UpdatePathDetails.of(action)
        path, old = details.path, details.old
        if Path(old).exists() and self._verified(ctx, old, path) is None:
            raise ApplyError(f"the copy {old} -> {path} was never verified; refusing to point the project at it")
        with open_driver(ctx.desired, details.instance) as driver:
            driver.update_path(details.uid, path)
        return f"{details.uid} now lives in {path}"

    @executor("attach")
    def attach(self, action: Action, ctx: RunContext) -> str:
        details = AttachDetails.of(action)
        imported = details.imported_from.as_dict() if details.imported_from else None
        with open_driver(ctx.desired, details.instance) as driver:
            uid, notes = driver.attach(details.path, details.uid, imported, force=details.force,
                                       reattach=details.reattach)
        return f"attached {details.path} to {details.instance} as {uid}" + "".join(f"; {n}" for n in notes)

    @executor("import")
    def import_(self, action: Action, ctx: RunContext) -> str:
        from reconciler.kinds.projects.bundle_import import import_bundle

        details = ImportDetails.of(action)
        config = ctx.desired.instances[details.instance]
        with open_reader(ctx.desired, details.instance) as reader:
            report = import_bundle(Path(details.bundle), reader, ctx.state, Path(details.path),
                                   uid=details.uid, owner_fallback=config.owner_user_id)
        for note in report.notes:
            ctx.log.warning("%s: %s", action.address, note)
        return f"imported as {report.uid} at {report.path} ({report.jobs} jobs, {report.files:,} files)"

    @executor("remove_old")
    def remove_old(self, action: Action, ctx: RunContext) -> str:
        details = RemoveOldDetails.of(action)
        path, copy = details.path, details.copy_
        row = self._verified(ctx, path, copy)
        if row is None:
            raise ApplyError(f"refusing to remove {path}: no verified copy of it at {copy} is recorded")
        if not (Path(copy) / model.PROJECT_FILE).is_file():
            raise ApplyError(f"refusing to remove {path}: its copy {copy} has no project.json any more")
        for instance in ctx.desired.instances:
            with open_reader(ctx.desired, instance) as reader:
                for document in reader.db[model.PROJECTS].find({"project_dir": path}):
                    if not document.get("detached") and not document.get("deleted"):
                        raise ApplyError(f"refusing to remove {path}: {document['uid']} on {instance} still "
                                         "uses it")
        files, size = row.files or 0, row.bytes or 0  # as verified: the row may be gone after the removal
        if Path(path).exists():
            shutil.rmtree(path)
        with ctx.state.session() as session:
            current = session.get(ProjectCopy, (path, copy))
            if current is not None:
                current.removed_at = _now()
                session.add(current)
                session.commit()
        return f"removed {path} ({files:,} files, {human_bytes(size)}; kept at {copy})"

    def commands(self) -> list[Any]:
        from reconciler.kinds.projects.commands import dev_group, projects_group

        return [projects_group, dev_group]


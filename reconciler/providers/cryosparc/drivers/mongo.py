"""The ``mongo`` driver: project operations performed directly on an instance's database
and project directories, the way CryoSPARC's own commands change them.

Every operation is safe to interrupt and re-run: documents change in an order that
leaves either the old state or a state the observer recognises (an attach in
progress carries the ``reconciler_attaching`` mark and is redone by the next run).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.errors import ApplyError
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.model import (
    ATTACHING,
    BUSY_STATUSES,
    JOBS,
    PROJECTS,
    USERS,
    WORKSPACES,
    Records,
    RecordsError,
)
from reconciler.providers.mongo.connection import redact

FLAGS = ("archived", "detached", "deleted")


def _plain(document: Any) -> dict[str, Any]:
    return {key: value for key, value in dict(document).items() if key != "_id"}


class MongoDriver:
    """Acts on one instance: ``db`` is its pymongo database (``meteor``)."""

    def __init__(self, db: Any, name: str, instance_id: str, owner_user_id: str | None = None):
        self.db = db
        self.name = name
        self.instance_id = instance_id
        self.owner_user_id = owner_user_id

    @property
    def reader(self) -> MongoDriver:
        """What reads the instance: this driver itself (the cryosparcm driver holds one too)."""
        return self

    # -- reads ---------------------------------------------------------------------------------

    def project(self, uid: str) -> dict[str, Any] | None:
        return self.db[PROJECTS].find_one({"uid": uid})

    def busy_jobs(self, uid: str) -> list[str]:
        cursor = self.db[JOBS].find({"project_uid": uid, "status": {"$in": list(BUSY_STATUSES)}}, {"uid": 1})
        return sorted((job["uid"] for job in cursor), key=model.uid_number)

    def records(self, uid: str) -> Records:
        project = self.project(uid)
        if project is None:
            raise ApplyError(f"{self.name} has no project {uid}")
        workspaces = [_plain(item) for item in self.db[WORKSPACES].find({"project_uid": uid})]
        jobs = [_plain(item) for item in self.db[JOBS].find({"project_uid": uid})]
        workspaces.sort(key=lambda item: model.uid_number(item["uid"]))
        jobs.sort(key=lambda item: model.uid_number(item["uid"]))
        plain = _plain(project)
        for flag in FLAGS:  # some servers (nx-27017) store a $set True as 1; the records say true/false
            if flag in plain:
                plain[flag] = bool(plain[flag])
        return Records(project=plain, workspaces=workspaces, jobs=jobs)

    def _refuse_busy(self, uid: str, operation: str) -> None:
        busy = self.busy_jobs(uid)
        if busy:
            raise ApplyError(f"cannot {operation} {uid} on {self.name}: jobs {', '.join(busy)} are queued or "
                             "running; it waits until they finish")

    def export(self, uid: str, directory: str | None = None) -> None:
        """Write the project's records into its directory (or ``directory``)."""
        records = self.records(uid)
        target = Path(directory or records.project["project_dir"])
        try:
            model.write_records(target, records)
        except OSError as error:
            raise ApplyError(f"cannot export the records of {uid} into {target}: {error.strerror}") from None

    def _set(self, uid: str, values: dict[str, Any]) -> None:
        from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
        try:
            result = self.db[PROJECTS].update_one({"uid": uid}, {"$set": values})
        except PyMongoError as error:
            raise ApplyError(f"{self.name}: updating {uid} failed: {redact(str(error).splitlines()[0])}") from None
        if result.matched_count != 1:
            raise ApplyError(f"{self.name} has no project {uid} any more; run plan again")

    # -- operations ----------------------------------------------------------------------------

    def archive(self, uid: str) -> None:
        self._refuse_busy(uid, "archive")
        self._set(uid, {"archived": True})
        self.export(uid)

    def unarchive(self, uid: str, path: str | None = None) -> None:
        self._set(uid, {"archived": False})
        self.export(uid)

    def update_path(self, uid: str, path: str) -> None:
        """Point the project at ``path`` (already a verified copy), carry its Live sessions'
        recorded directories along (``model.rebase_session_dirs``), and export its records there."""
        from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
        old_dir = str((self.project(uid) or {}).get("project_dir") or "")
        self._set(uid, {"project_dir": path})
        try:
            for workspace in self.db[WORKSPACES].find({"project_uid": uid, "session_dir": {"$exists": True}}):
                rebased = model.rebase_session_dirs([workspace], old_dir, path)[0]
                if rebased.get("session_dir") != workspace.get("session_dir"):
                    change: dict[str, Any] = ({"$set": {"session_dir": rebased["session_dir"]}} if "session_dir" in
                                              rebased else {"$unset": {"session_dir": ""}})
                    self.db[WORKSPACES].update_one({"_id": workspace["_id"]}, change)
        except PyMongoError as error:
            raise ApplyError(f"{self.name}: updating the sessions of {uid} failed: "
                             f"{redact(str(error).splitlines()[0])}") from None
        self.export(uid, path)

    def detach(self, uid: str) -> None:
        """Export the records, remove the lock, then mark the document detached (that order: a
        run killed in between finds the project still attached and detaches it again)."""
        self._refuse_busy(uid, "detach")
        project = self.project(uid) or {}
        directory = Path(project.get("project_dir", ""))
        self.export(uid)
        owner = model.read_lock(directory)
        if owner not in (None, self.instance_id):
            raise ApplyError(f"{directory}/cs.lock belongs to instance {owner}, not to {self.name}; "
                             "refusing to detach a directory this instance does not own")
        model.remove_lock(directory)
        self._set(uid, {"detached": True})

    def next_free_uid(self) -> str:
        numbers = [doc.get("uid_num") or model.uid_number(doc["uid"])
                   for doc in self.db[PROJECTS].find({}, {"uid": 1, "uid_num": 1})]
        return f"P{max(numbers, default=0) + 1}"

    def attach(self, path: str, uid: str, imported_from: dict[str, str] | None = None, force: bool = False,
               reattach: bool = False) -> tuple[str, list[str]]:
        """Recreate the project, workspace and job documents from the records in ``path`` under
        ``uid``, lock the directory for this instance and export the records again.

        Returns (uid, notes). On failure everything this call inserted or wrote is undone.
        """
        from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
        directory = Path(path)
        try:
            original = model.read_records(directory)
        except RecordsError as error:
            raise ApplyError(f"cannot attach {path}: {error}") from None
        lock_before = model.read_lock(directory)
        if lock_before not in (None, self.instance_id) and not force:
            raise ApplyError(f"{path}/cs.lock belongs to instance {lock_before}; it is attached elsewhere. "
                             "Detach it there first, or set force = true on this project if that instance is gone")
        existing = self.project(uid)
        if existing is not None:
            ours = bool(existing.get(ATTACHING)) or (reattach and bool(existing.get("detached")))
            if not ours:
                raise ApplyError(f"uid {uid} was taken on {self.name} after the plan was made; run plan again")
            self._remove_documents(uid)
        notes: list[str] = []
        records = model.rewrite_uid(original, uid)
        records = Records(records.project, model.rebase_session_dirs(
            records.workspaces, str(original.project.get("project_dir") or ""), str(directory)), records.jobs)
        project = dict(records.project)
        owner = project.get("owner_user_id")
        if owner and self.db[USERS].find_one({"_id": owner}) is None and self.owner_user_id:
            notes.append(f"owner {owner} is not a user on {self.name}; assigned to {self.owner_user_id}")
            project["owner_user_id"] = self.owner_user_id
        project.update({"project_dir": str(directory), "detached": True, "archived": False, "deleted": False,
                        ATTACHING: datetime.now(UTC)})
        if imported_from:
            project["imported_from"] = imported_from
        records = Records(project=project, workspaces=records.workspaces, jobs=records.jobs)
        try:
            self.db[PROJECTS].insert_one(dict(project))
            if records.workspaces:
                self.db[WORKSPACES].insert_many([dict(item) for item in records.workspaces])
            if records.jobs:
                self.db[JOBS].insert_many([dict(job) for job in records.jobs])
            final = {key: value for key, value in project.items() if key != ATTACHING}
            final["detached"] = False
            model.write_lock(directory, self.instance_id)
            model.write_records(directory, Records(final, records.workspaces, records.jobs))
            self.db[PROJECTS].update_one({"uid": uid}, {"$set": {"detached": False}, "$unset": {ATTACHING: ""}})
        except BaseException as error:
            self._remove_documents(uid)
            try:
                model.write_records(directory, original)
                if lock_before is None:
                    model.remove_lock(directory)
                else:
                    model.write_lock(directory, lock_before)
            except OSError:
                pass
            if isinstance(error, PyMongoError):
                raise ApplyError(f"attaching {path} as {uid} on {self.name} failed and was rolled back: "
                                 f"{redact(str(error).splitlines()[0])}") from None
            if isinstance(error, OSError):
                raise ApplyError(f"attaching {path} as {uid} on {self.name} failed and was rolled back: "
                                 f"{error.strerror}: {error.filename}") from None
            raise
        return uid, notes

    def _remove_documents(self, uid: str) -> None:
        from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
        try:
            self.db[JOBS].delete_many({"project_uid": uid})
            self.db[WORKSPACES].delete_many({"project_uid": uid})
            self.db[PROJECTS].delete_many({"uid": uid})
        except PyMongoError:
            pass

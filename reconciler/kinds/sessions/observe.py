"""Reading Live sessions: the session workspace documents on each instance, the files of
each datatype, pending hooks. Measured sizes are cached in the state store."""

from __future__ import annotations

import os
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import select

from reconciler.engine.actions import AddressMessage
from reconciler.engine.kind import Observation, RunContext
from reconciler.engine.planner import matches_target
from reconciler.errors import ObserveError
from reconciler.kinds.sessions.datatypes import DATATYPES, collect, total
from reconciler.kinds.sessions.diff import DatatypeFacts, SessionFacts, session_address
from reconciler.kinds.sessions.hook import hook_problem
from reconciler.kinds.sessions.tables import PendingHook, SessionDatatype
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.drivers.mongo import MongoDriver
from reconciler.providers.cryosparc.model import PROJECTS, WORKSPACES
from reconciler.providers.cryosparc.readers import Readers


def instance_of(desired: Any, session: Any) -> str:
    return session.instance or next(iter(desired.instances))


def find_session(reader: MongoDriver, project_uid: str, session_uid: str) -> tuple[dict[str, Any], str]:
    """The session's workspace document and its directory, resolved from the project's current
    directory (``model.session_directory``) and checked to lie physically inside it.

    Raises ObserveError when the session is unknown or its directory would be outside the project.
    """
    document = reader.db[WORKSPACES].find_one({"project_uid": project_uid, "session_uid": session_uid})
    if document is None:
        raise ObserveError(f"no Live session {session_uid} in {project_uid} on {reader.name}")
    project = reader.db[PROJECTS].find_one({"uid": project_uid}) or {}
    return dict(document), str(session_dir_of(project, document))


def session_dir_of(project: dict[str, Any], document: dict[str, Any]) -> Path:
    """The directory of the session ``document`` of ``project``: inside the project's current
    directory, with every link resolved. Raises ObserveError otherwise (never a path elsewhere)."""
    project_dir = str(project.get("project_dir") or "")
    try:
        directory = model.session_directory(project_dir, str(document.get("session_uid")),
                                            document.get("session_dir"))
    except ValueError as error:
        raise ObserveError(f"{project.get('uid', '?')}/{document.get('session_uid')}: {error}") from None
    if directory.exists() and not model.physically_inside(directory, Path(project_dir)):
        raise ObserveError(f"{project.get('uid', '?')}/{document.get('session_uid')}: {directory} resolves to "
                           f"{os.path.realpath(directory)}, outside the project directory {project_dir}; "
                           "reconciler acts on session data only inside its project")
    return directory


def measure(session_dir: str, datatype: str, document: dict[str, Any]) -> DatatypeFacts:
    entry = (document.get("data_management") or {}).get(datatype) or {}
    files, size = total(collect(Path(session_dir), datatype))
    return DatatypeFacts(datatype=datatype, status=str(entry.get("status") or "active"),
                         prev_status=entry.get("prev_status"), files=files, bytes=size)


def cache(ctx: RunContext, facts: SessionFacts) -> None:
    now = datetime.now(UTC)
    with ctx.state.session() as session:
        for datatype, item in facts.datatypes.items():
            key = (facts.instance, facts.project_uid, facts.session_uid, datatype)
            row = session.get(SessionDatatype, key) or SessionDatatype(
                instance=facts.instance, project_uid=facts.project_uid, session_uid=facts.session_uid,
                datatype=datatype, status=item.status, files=0, bytes=0, measured_at=now)
            row.status, row.files, row.bytes, row.measured_at = item.status, item.files, item.bytes, now
            session.add(row)
        session.commit()


def observe_sessions(desired: Any, ctx: RunContext) -> Observation:
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    facts: list[SessionFacts] = []
    errors: list[AddressMessage] = []
    problem = hook_problem(desired.hooks.datatype_state)
    with ctx.state.session() as session:
        pending = {row.address: row.status for row in session.exec(select(PendingHook)).all()}
    with ExitStack() as stack:
        readers = Readers(desired, stack)
        for key, config in desired.sessions.items():
            declared = config.declared()
            addresses = [session_address(key, datatype) for datatype in declared]
            if ctx.targets and not any(matches_target(address, ctx.targets) for address in addresses):
                continue
            project_uid, _, session_uid = key.partition("/")
            instance = instance_of(desired, config)
            try:
                reader = readers.get(instance)
                document, session_dir = find_session(reader, project_uid, session_uid)
            except (ObserveError, PyMongoError) as error:
                errors.extend(AddressMessage(address=address, message=str(error)) for address in addresses)
                continue
            fact = SessionFacts(key=key, instance=instance, project_uid=project_uid, session_uid=session_uid,
                                status=str(document.get("status", "unknown")), session_dir=session_dir,
                                declared={}, hook_problem=problem)
            for datatype, wanted in declared.items():
                address = session_address(key, datatype)
                try:
                    fact.datatypes[datatype] = measure(session_dir, datatype, document)
                    fact.declared[datatype] = wanted
                except OSError as error:
                    errors.append(AddressMessage(address=address, message=(
                        f"cannot read {error.filename}: {error.strerror}")))
            fact.pending_hooks = {datatype: pending[session_address(key, datatype)] for datatype in DATATYPES
                                  if session_address(key, datatype) in pending}
            cache(ctx, fact)
            facts.append(fact)
    return Observation(facts=facts, errors=errors)

"""The sessions resource kind: declared states of CryoSPARC Live session datatypes
(observe.py reads, diff.py plans; the executors below change states, delete data and
run the facility's hook)."""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from reconciler.engine.actions import Action
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, RunContext, executor
from reconciler.engine.memo import Memo
from reconciler.errors import ApplyError
from reconciler.kinds.sessions.config import AccessSection, HooksSection, SessionConfig, check_sessions
from reconciler.kinds.sessions.datatypes import DATATYPES, collect, total
from reconciler.kinds.sessions.diff import ChangeDetails, DeleteDetails, HookDetails, diff_session, session_address
from reconciler.kinds.sessions.hook import HookCall, run_hook
from reconciler.kinds.sessions.observe import observe_sessions, session_dir_of
from reconciler.kinds.sessions.tables import PendingHook, SessionDatatype
from reconciler.providers.cryosparc.config import INSTANCES_SECTION
from reconciler.providers.cryosparc.drivers import open_reader
from reconciler.providers.cryosparc.model import WORKSPACES
from reconciler.providers.mongo.config import DATABASES_SECTION
from reconciler.units import human_bytes


def invoking_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


class SessionsKind(Kind):
    name = "sessions"
    address_prefix = "session"
    sections = {
        **DATABASES_SECTION,
        **INSTANCES_SECTION,
        "sessions": (dict[str, SessionConfig],
                     Field(default_factory=dict, description='Live session datatype states, keyed "P12/S1".')),
        "hooks": (HooksSection, Field(default_factory=HooksSection, description=HooksSection.__doc__)),
        "access": (AccessSection, Field(default_factory=AccessSection, description=AccessSection.__doc__)),
    }
    tables = [SessionDatatype, PendingHook]

    def addresses(self, desired: Any) -> list[str]:
        return [session_address(key, datatype) for key, session in desired.sessions.items()
                for datatype in session.declared()]

    def check(self, desired: Any, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        return check_sessions(desired)

    def observe(self, desired: Any, ctx: RunContext) -> Observation:
        if not desired.sessions:
            return Observation(facts=[], memo=Memo())  # nothing declared: nothing a no-change memo need check
        return observe_sessions(desired, ctx)

    def diff(self, desired: Any, observation: Observation) -> Diff:
        combined = Diff()
        for facts in observation.facts or []:
            combined.extend(diff_session(facts))
        return combined

    # -- executors -------------------------------------------------------------------------------

    @staticmethod
    def _authorize(ctx: RunContext) -> None:
        admins = ctx.desired.access.datatype_admins
        user = invoking_user()
        if admins is not None and user not in admins:
            raise ApplyError(f"user {user} may not change datatype states or delete session data "
                             f"([access] datatype_admins: {', '.join(admins) or 'nobody'})")

    @staticmethod
    def _hook(ctx: RunContext, details: HookDetails) -> str | None:
        program = ctx.desired.hooks.datatype_state
        if program is None:
            return None
        call = HookCall(details.project_uid, details.session_uid, details.datatype, details.status)
        run_hook(program, call, ctx.desired.hooks.timeout.total_seconds(), ctx.base_dir / "state")
        return program

    @staticmethod
    def _record(ctx: RunContext, details: ChangeDetails, size: int, files: int) -> None:
        field = f"data_management.{details.datatype}"
        with open_reader(ctx.desired, details.instance) as reader:
            result = reader.db[WORKSPACES].update_one(
                {"project_uid": details.project_uid, "session_uid": details.session_uid},
                {"$set": {f"{field}.status": details.status, f"{field}.prev_status": details.from_,
                          f"{field}.size": size}})
        if result.matched_count != 1:
            raise ApplyError(f"session {details.session_uid} of {details.project_uid} is gone; run plan again")
        with ctx.state.session() as session:
            session.merge(SessionDatatype(
                instance=details.instance, project_uid=details.project_uid, session_uid=details.session_uid,
                datatype=details.datatype, status=details.status, files=files, bytes=size,
                measured_at=datetime.now(UTC)))
            session.commit()

    @staticmethod
    def _session_dir(ctx: RunContext, details: HookDetails) -> Path:
        """The session's directory as it is now (from its project's current directory, never
        outside it), which must be the one the plan was made for. Raises ApplyError otherwise."""
        from reconciler.errors import ObserveError

        with open_reader(ctx.desired, details.instance) as reader:
            project = reader.project(details.project_uid) or {}
            document = reader.db[WORKSPACES].find_one({"project_uid": details.project_uid,
                                                       "session_uid": details.session_uid})
        if not project or document is None:
            raise ApplyError(f"session {details.session_uid} of {details.project_uid} is gone; run plan again")
        try:
            directory = session_dir_of(project, document)
        except ObserveError as error:
            raise ApplyError(str(error)) from None
        if str(directory) != details.session_dir:
            raise ApplyError(f"the session's directory is now {directory}, not {details.session_dir} as planned; "
                             "run plan again")
        return directory

    @executor("set_state")
    def set_state(self, action: Action, ctx: RunContext) -> str:
        details = ChangeDetails.of(action)
        self._authorize(ctx)
        directory = self._session_dir(ctx, details)
        hook = self._hook(ctx, details)  # first: a failing hook leaves the state unchanged
        files, size = total(collect(directory, details.datatype))
        self._record(ctx, details, size, files)
        return f"{details.datatype}: {details.from_} -> {details.status}" + (" (hook ran)" if hook else "")

    @executor("delete_data")
    def delete_data(self, action: Action, ctx: RunContext) -> str:
        details = DeleteDetails.of(action)
        datatype = details.datatype
        if not DATATYPES[datatype].deletable:
            raise ApplyError(f"reconciler never deletes {datatype} data")
        self._authorize(ctx)
        directory = self._session_dir(ctx, details)
        files = collect(directory, datatype)
        removed, freed = 0, 0
        for item in files:
            if ctx.stop.is_set():
                raise ApplyError(f"stopped after removing {removed:,} of {len(files):,} files; the next run "
                                 "finishes the deletion")
            try:
                os.unlink(item.path)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise ApplyError(f"cannot remove {item.path}: {error.strerror}; {removed:,} files were removed, "
                                 "the status stays until every file is gone") from None
            removed += 1
            freed += 0 if item.link else item.size
            ctx.progress(f"delete {action.address}", removed, len(files))
        left = collect(directory, datatype)
        if left:
            raise ApplyError(f"{len(left):,} files of {datatype} appeared or remain (e.g. {left[0].path}); "
                             "the status stays until every file is gone")
        # the hook is owed from the moment the state says deleted: record that first, so a run
        # killed between the two (or during the hook) runs the hook on its next run
        self._owe_hook(ctx, action.address, "not run yet (recorded before the deletion was)")
        self._record(ctx, details, 0, 0)  # only now: never "deleted" while files remain
        try:
            self._hook(ctx, details)
        except ApplyError as error:
            self._owe_hook(ctx, action.address, str(error))
            raise ApplyError(f"deleted {removed:,} files ({human_bytes(freed)}), but {error}; the next run runs "
                             "the hook again") from None
        self._hook_paid(ctx, action.address)
        return f"deleted {removed:,} files ({human_bytes(freed)}) of {datatype}"

    @staticmethod
    def _owe_hook(ctx: RunContext, address: str, why: str) -> None:
        """Record that the state-change hook for a deletion must (still) run."""
        if ctx.desired.hooks.datatype_state is None:
            return
        with ctx.state.session() as session:
            session.merge(PendingHook(address=address, status="deleted", failed_at=datetime.now(UTC),
                                      error=why[:2000]))
            session.commit()

    @staticmethod
    def _hook_paid(ctx: RunContext, address: str) -> None:
        """The hook ran: nothing is owed for ``address`` any more."""
        with ctx.state.session() as session:
            row = session.get(PendingHook, address)
            if row is not None:
                session.delete(row)
                session.commit()

    @executor("hook")
    def hook(self, action: Action, ctx: RunContext) -> str:
        self._authorize(ctx)
        details = HookDetails.of(action)
        self._hook(ctx, details)
        self._hook_paid(ctx, action.address)
        return f"hook ran for {details.status}"

    def commands(self) -> list[Any]:
        from reconciler.kinds.sessions.commands import sessions_group

        return [sessions_group]

"""The sessions planner: pure functions from observed Live sessions to state changes and deletions."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff
from reconciler.kinds.sessions.datatypes import DATATYPES
from reconciler.units import human_bytes


@dataclass
class DatatypeFacts:
    datatype: str
    status: str = "active"
    prev_status: str | None = None
    files: int = 0
    bytes: int = 0


@dataclass
class SessionFacts:
    key: str  # "P12/S1"
    instance: str
    project_uid: str
    session_uid: str
    status: str  # the session's own status: completed, running, paused…
    session_dir: str
    declared: dict[str, str]
    datatypes: dict[str, DatatypeFacts] = field(default_factory=dict)
    pending_hooks: dict[str, str] = field(default_factory=dict)  # datatype -> status whose hook must run again
    hook_problem: str | None = None  # the configured hook is missing or not executable


class HookDetails(Details):
    """A ``hook`` action: run the state-change hook again for a change already made."""

    instance: str
    project_uid: str
    session_uid: str
    session_dir: str
    datatype: str
    status: str


class ChangeDetails(HookDetails):
    """A ``set_state`` action: the datatype's recorded state from ``from_`` to ``status``."""

    from_: str = Field(alias="from")


class DeleteDetails(ChangeDetails):
    """A ``delete_data`` action: the datatype's files removed, then its state recorded."""

    file_count: int
    bytes: int


def session_address(key: str, datatype: str) -> str:
    return f"session:{key}/{datatype}"


def diff_session(facts: SessionFacts) -> Diff:
    diff = Diff()
    base = {"instance": facts.instance, "project_uid": facts.project_uid, "session_uid": facts.session_uid,
            "session_dir": facts.session_dir}
    for datatype, status in sorted(facts.pending_hooks.items()):
        current = facts.datatypes.get(datatype)
        if current is not None and current.status != status:
            continue  # the change itself is still to be made; its executor runs the hook
        diff.actions.append(Action.create(
            address=session_address(facts.key, datatype), kind="hook",
            reason=f"the state-change hook for '{status}' has not completed since the change; run it again",
            facts={"pending": status}, details=HookDetails(**base, datatype=datatype, status=status)))
    if facts.status != "completed":
        if facts.declared:
            diff.notes.append(AddressMessage(address=f"session:{facts.key}", message=(
                f"waiting: session {facts.session_uid} of {facts.project_uid} is {facts.status}; datatype states "
                "change only on completed sessions")))
        return diff
    for datatype, wanted in facts.declared.items():
        address = session_address(facts.key, datatype)
        current = facts.datatypes[datatype]
        change = {**base, "datatype": datatype, "status": wanted, "from_": current.status}
        basis = {"session": facts.status, "status": current.status, "files": current.files, "bytes": current.bytes}
        spec = DATATYPES[datatype]
        if current.status == "deleted" and wanted != "deleted":
            diff.errors.append(AddressMessage(address=address, message=(
                f"{datatype} of {facts.key} was deleted; it cannot become {wanted} again (the data is gone)")))
            continue
        remaining = wanted == "deleted" and spec.deletable and current.files > 0
        if wanted == current.status and not remaining:
            if wanted == "deleted" and datatype == "raw" and current.files:
                diff.notes.append(AddressMessage(address=address, message=(
                    f"raw is marked deleted but {current.files:,} files remain; reconciler never deletes raw data")))
            continue
        if facts.hook_problem:
            diff.errors.append(AddressMessage(address=address, message=facts.hook_problem))
            continue
        if wanted == "deleted" and spec.deletable:
            reason = (f"delete {current.files:,} files ({human_bytes(current.bytes)}) of {datatype}"
                      + (" left by an interrupted deletion" if current.status == "deleted" else ""))
            diff.actions.append(Action.create(
                address=address, kind="delete_data", reason=reason, facts=basis, destructive=True,
                details=DeleteDetails(**change, file_count=current.files, bytes=current.bytes)))
            continue
        reason = f"{current.status} -> {wanted}"
        if wanted == "deleted":
            reason += " (recorded only: reconciler never deletes raw data)"
        diff.actions.append(Action.create(address=address, kind="set_state", reason=reason, facts=basis,
                                          details=ChangeDetails(**change)))
    return diff


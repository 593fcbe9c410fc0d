"""The sessions planner is pure: facts in, state changes and deletions out."""

from __future__ import annotations

from dataclasses import replace

from reconciler.kinds.sessions.datatypes import DATATYPES, STATEFUL
from reconciler.kinds.sessions.diff import DatatypeFacts, SessionFacts, diff_session


def facts(declared: dict[str, str], **changes: object) -> SessionFacts:
    base = SessionFacts(key="P12/S1", instance="cs", project_uid="P12", session_uid="S1", status="completed",
                        session_dir="/data/P12/S1", declared=declared,
                        datatypes={name: DatatypeFacts(name, files=10, bytes=1000) for name in declared})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_datatype_table() -> None:
    assert list(DATATYPES) == ["raw", "micrographs", "thumbnails", "particles", "metadata"]
    assert STATEFUL == ("raw", "micrographs", "particles", "metadata")
    assert [name for name, item in DATATYPES.items() if item.deletable] == ["micrographs", "particles", "metadata"]


def test_state_changes_and_deletions() -> None:
    diff = diff_session(facts({"micrographs": "archiving", "particles": "deleted", "raw": "deleted"}))
    by_address = {action.address: action for action in diff.actions}
    assert by_address["session:P12/S1/micrographs"].kind == "set_state"
    deletion = by_address["session:P12/S1/particles"]
    assert deletion.kind == "delete_data" and deletion.destructive
    assert deletion.details["file_count"] == 10 and deletion.details["bytes"] == 1000
    raw = by_address["session:P12/S1/raw"]
    assert raw.kind == "set_state" and not raw.destructive and "never deletes raw data" in raw.reason


def test_nothing_happens_on_sessions_that_are_not_completed() -> None:
    diff = diff_session(facts({"micrographs": "archived"}, status="running"))
    assert diff.actions == [] and "waiting: session S1 of P12 is running" in diff.notes[0].message


def test_deleted_never_comes_back() -> None:
    gone = facts({"particles": "active"})
    gone.datatypes["particles"] = DatatypeFacts("particles", status="deleted")
    diff = diff_session(gone)
    assert diff.actions == [] and "cannot become active again" in diff.errors[0].message


def test_an_interrupted_deletion_is_planned_again_and_a_finished_one_is_not() -> None:
    half = facts({"particles": "deleted"})
    half.datatypes["particles"] = DatatypeFacts("particles", status="deleted", files=3, bytes=30)
    (action,) = diff_session(half).actions
    assert action.kind == "delete_data" and "interrupted" in action.reason
    done = facts({"particles": "deleted"})
    done.datatypes["particles"] = DatatypeFacts("particles", status="deleted", files=0, bytes=0)
    assert diff_session(done).actions == []


def test_a_broken_hook_is_an_error_instead_of_an_action() -> None:
    diff = diff_session(facts({"metadata": "archived"}, hook_problem="the hook /x does not exist"))
    assert diff.actions == [] and diff.errors[0].address == "session:P12/S1/metadata"


def test_a_pending_hook_is_run_again() -> None:
    diff = diff_session(facts({}, pending_hooks={"particles": "deleted"}))
    assert [(a.kind, a.details["status"]) for a in diff.actions] == [("hook", "deleted")]

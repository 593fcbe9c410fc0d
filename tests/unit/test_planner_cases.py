"""Planner tests as data (tests/data/planner/*.toml, see its README): observed facts in,
proposed actions, notes and errors out, through each kind's pure diff. One runner; a case
is a file."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from reconciler.engine.kind import Diff
from reconciler.kinds.backups.diff import DatabaseFacts, diff_database
from reconciler.kinds.instances.database_migration import DatabaseMigrationFacts
from reconciler.kinds.instances.diff import InstanceFacts, diff_instance
from reconciler.kinds.instances.migration import MigrationFacts
from reconciler.kinds.projects.diff import ProjectFacts, diff_project
from reconciler.kinds.replicas.diff import PairFacts, ReplicaFacts, diff_replicas
from reconciler.kinds.replicas.inventory import Candidate, CandidateSet
from reconciler.kinds.sessions.diff import SessionFacts, diff_session


@dataclasses.dataclass
class _PlainPair(PairFacts):
    """A replicas pair as a case writes it: ``candidates`` a plain list of Candidate (path, size,
    mtime_ns, recorded); CandidateSet is a columnar class pydantic does not validate."""

    candidates: list[Candidate] = dataclasses.field(default_factory=list)  # type: ignore[assignment]


@dataclasses.dataclass
class _PlainReplicaFacts(ReplicaFacts):
    pairs: list[_PlainPair] = dataclasses.field(default_factory=list)  # type: ignore[assignment]


@dataclasses.dataclass
class _TypedInstanceFacts(InstanceFacts):
    """InstanceFacts with its migrations' types spelled out (``Any`` in the kind, which imports
    them only when an instance migrates), so that a case can give them as tables."""

    migration: MigrationFacts | None = None
    database_migration: DatabaseMigrationFacts | None = None


def _fields(facts: Any, kind: type) -> dict[str, Any]:
    return {field.name: getattr(facts, field.name) for field in dataclasses.fields(kind)}


def _diff_replicas(plain: _PlainReplicaFacts) -> Diff:
    """diff_replicas over the ReplicaFacts the plain facts stand for (each pair's candidates a CandidateSet)."""
    pairs = [PairFacts(**{**_fields(pair, PairFacts), "candidates": CandidateSet.of(pair.candidates)})
             for pair in plain.pairs]
    return diff_replicas(ReplicaFacts(**{**_fields(plain, ReplicaFacts), "pairs": pairs}))


CASES = Path(__file__).resolve().parents[1] / "data" / "planner"
DIFFS: dict[str, tuple[type, Callable[[Any], Diff]]] = {
    "backups": (DatabaseFacts, diff_database),
    "instances": (_TypedInstanceFacts, diff_instance),
    "projects": (ProjectFacts, diff_project),
    "replicas": (_PlainReplicaFacts, _diff_replicas),
    "sessions": (SessionFacts, diff_session),
}


def _with_nones(kind: Any, value: Any) -> Any:
    """``value`` with every field of a dataclass or NamedTuple in it that may be None, has no
    default and is left out set to None: TOML has no null, so a case leaves such a fact out."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return _with_nones(args[0], value)
    if typing.get_origin(kind) is list and isinstance(value, list):
        return [_with_nones(args[0], item) for item in value]
    if dataclasses.is_dataclass(kind):
        names = [item.name for item in dataclasses.fields(kind)]
        required = {item.name for item in dataclasses.fields(kind)
                    if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING}
    elif isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
        names, required = list(kind._fields), set(kind._fields) - set(kind._field_defaults)  # type: ignore[attr-defined]
    else:
        return value
    if not isinstance(value, dict):
        return value
    hints = typing.get_type_hints(kind)
    filled = dict(value)
    for name in names:
        if name in filled:
            filled[name] = _with_nones(hints[name], filled[name])
        elif name in required and type(None) in typing.get_args(hints[name]):
            filled[name] = None
    return filled


def _messages(found: list[Any]) -> list[dict[str, str]]:
    return [{"address": item.address, "message": item.message} for item in found]


@pytest.mark.parametrize("path", sorted(CASES.glob("*.toml")), ids=lambda path: path.stem)
def test_planner_case(path: Path) -> None:
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    facts_type, diff = DIFFS[case["diff"]]
    facts: Any = TypeAdapter(facts_type).validate_python(_with_nones(facts_type, case["facts"]))
    result = diff(facts)
    expect = case["expect"]
    actions = result.actions
    assert [(action.address, action.kind, action.destructive) for action in actions] == [
        (want["address"], want["kind"], want["destructive"]) for want in expect["actions"]], case["description"]
    for number, (action, want) in enumerate(zip(actions, expect["actions"], strict=True)):
        if "reason" in want:
            assert action.reason == want["reason"], f"action {number}: reason"
        for key, value in want.get("details", {}).items():
            assert action.details.get(key) == value, f"action {number}: details.{key}"
        if want.get("all_details"):
            assert set(action.details) == set(want.get("details", {})), f"action {number}: details keys"
        if want.get("depends_on_previous"):
            assert actions[number - 1].id in action.depends_on
        if "depends_on" in want:  # exactly: an index is that action's id, a string an address or id as is
            wanted = {actions[item].id if isinstance(item, int) else item for item in want["depends_on"]}
            assert set(action.depends_on) == wanted, f"action {number}: depends_on"
        if "before" in want:
            assert action.before == want["before"], f"action {number}: before"
    for name, found in (("notes", result.notes), ("errors", result.errors), ("warnings", result.warnings)):
        assert _messages(found) == expect.get(name, []), f"{name} (none when the case gives none)"
    again = diff(TypeAdapter(facts_type).validate_python(_with_nones(facts_type, case["facts"])))
    assert [(a.id, a.precondition) for a in again.actions] == [(a.id, a.precondition) for a in actions], \
        "the same facts must give the same action ids and preconditions"


def test_every_kind_with_cases_is_known() -> None:
    kinds = {tomllib.loads(path.read_text(encoding="utf-8"))["diff"] for path in CASES.glob("*.toml")}
    assert kinds == set(DIFFS)

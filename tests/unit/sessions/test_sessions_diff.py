"""The datatype table. The sessions planner's cases (facts in, state changes and deletions out)
are data: tests/data/planner/sessions-*.toml, run by tests/unit/test_planner_cases.py."""

from __future__ import annotations

from dataclasses import replace

from reconciler.kinds.sessions.datatypes import DATATYPES, STATEFUL
from reconciler.kinds.sessions.diff import DatatypeFacts, SessionFacts


def facts(declared: dict[str, str], **changes: object) -> SessionFacts:
    base = SessionFacts(key="P12/S1", instance="cs", project_uid="P12", session_uid="S1", status="completed",
                        session_dir="/data/P12/S1", declared=declared,
                        datatypes={name: DatatypeFacts(name, files=10, bytes=1000) for name in declared})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_datatype_table() -> None:
    assert list(DATATYPES) == ["raw", "micrographs", "thumbnails", "particles", "metadata"]
    assert STATEFUL == ("raw", "micrographs", "particles", "metadata")
    assert [name for name, item in DATATYPES.items() if item.deletable] == ["micrographs", "particles", "metadata"]

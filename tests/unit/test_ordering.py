"""The dependency order of actions: pure, so tested over random graphs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine.actions import Action
from reconciler.engine.ordering import resolve_dependencies, with_dependencies
from reconciler.errors import PlanError


def _action(name: str, depends_on=(), before=()) -> Action:
    return Action.create(address=f"t:{name}", kind="write", reason="r", facts=name,
                         details={"n": name}, depends_on=list(depends_on), before=list(before))


@st.composite
def dags(draw):
    count = draw(st.integers(min_value=1, max_value=25))
    names = [f"n{index}" for index in range(count)]
    edges = {name: draw(st.sets(st.sampled_from(names[:index]), max_size=4)) if index else set()
             for index, name in enumerate(names)}
    order = draw(st.permutations(names))
    return [(_action(name, [f"t:{dep}" for dep in sorted(edges[name])])) for name in order], edges


@given(dags())
def test_every_action_comes_after_what_it_depends_on(case):
    actions, edges = case
    ordered = resolve_dependencies(actions)
    assert sorted(a.id for a in ordered) == sorted(a.id for a in actions)
    position = {a.address: index for index, a in enumerate(ordered)}
    for name, dependencies in edges.items():
        for dependency in dependencies:
            assert position[f"t:{dependency}"] < position[f"t:{name}"]
    by_id = {a.id: a for a in ordered}
    for action in ordered:
        assert all(by_id[dependency].address != action.address for dependency in action.depends_on)


@given(dags())
def test_order_is_deterministic(case):
    actions, _ = case
    assert [a.id for a in resolve_dependencies(actions)] == [a.id for a in resolve_dependencies(list(actions))]


def test_independent_actions_keep_the_order_kinds_emitted():
    actions = [_action("c"), _action("a"), _action("b")]
    assert [a.address for a in resolve_dependencies(actions)] == ["t:c", "t:a", "t:b"]


def test_before_makes_other_addresses_wait():
    backup = _action("db")
    archive = _action("project", before=["t:db"])
    ordered = resolve_dependencies([backup, archive])
    assert [a.address for a in ordered] == ["t:project", "t:db"]
    assert ordered[1].depends_on == [archive.id] and ordered[1].before == []


def test_a_dependency_on_an_address_with_nothing_to_do_is_satisfied():
    ordered = resolve_dependencies([_action("a", ["t:already-fine"])])
    assert ordered[0].depends_on == []


def test_a_cycle_is_refused_naming_the_addresses():
    with pytest.raises(PlanError, match="cycle: t:a, t:b"):
        resolve_dependencies([_action("a", ["t:b"]), _action("b", ["t:a"])])


def test_with_dependencies_pulls_in_transitive_prerequisites():
    ordered = resolve_dependencies([_action("a"), _action("b", ["t:a"]), _action("c", ["t:b"]), _action("d")])
    chosen = [a.id for a in ordered if a.address == "t:c"]
    assert [a.address for a in with_dependencies(ordered, chosen)] == ["t:a", "t:b", "t:c"]

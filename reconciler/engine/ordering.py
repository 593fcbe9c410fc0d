"""Dependency order of actions: pure functions over the plan's actions."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from reconciler.engine.actions import Action
from reconciler.errors import PlanError


def resolve_dependencies(actions: list[Action]) -> list[Action]:
    """Resolve ``depends_on`` (ids or addresses) and ``before`` (addresses) into
    ``depends_on`` ids, and return the actions in dependency order.

    Ties keep the order the kinds emitted, so a plan reads the same every time.
    A dependency on an address with no action in the plan is already satisfied
    (nothing needs doing there) and is dropped.

    Raises PlanError naming the addresses when the dependencies form a cycle.
    """
    by_id = {action.id: action for action in actions}
    by_address: dict[str, list[str]] = {}
    for action in actions:
        by_address.setdefault(action.address, []).append(action.id)
    needs: dict[str, set[str]] = {action.id: set() for action in actions}
    for action in actions:
        for reference in action.depends_on:
            if reference in by_id:
                needs[action.id].add(reference)
            else:
                needs[action.id].update(other for other in by_address.get(reference, []) if other != action.id)
        for address in action.before:
            for other in by_address.get(address, []):
                if other != action.id:
                    needs[other].add(action.id)
    position = {action.id: index for index, action in enumerate(actions)}
    waiting = {action_id: set(required) for action_id, required in needs.items()}
    dependants: dict[str, list[str]] = {action_id: [] for action_id in needs}
    for action_id, required in needs.items():
        for other in required:
            dependants[other].append(action_id)
    ready = [(position[action_id], action_id) for action_id, required in waiting.items() if not required]
    heapq.heapify(ready)
    ordered: list[Action] = []
    while ready:
        _, action_id = heapq.heappop(ready)
        ordered.append(by_id[action_id].model_copy(update={"depends_on": sorted(needs[action_id]), "before": []}))
        for dependant in dependants[action_id]:
            waiting[dependant].discard(action_id)
            if not waiting[dependant]:
                heapq.heappush(ready, (position[dependant], dependant))
    if len(ordered) != len(actions):
        stuck = sorted({by_id[action_id].address for action_id, required in waiting.items() if required})
        raise PlanError(f"actions depend on each other in a cycle: {', '.join(stuck)}; "
                        "this is a bug in a resource kind")
    return ordered


def with_dependencies(actions: list[Action], chosen: Iterable[str]) -> list[Action]:
    """The actions whose ids are in ``chosen`` plus everything they (transitively) depend on,
    in the original order. ``actions`` must already be resolved."""
    by_id = {action.id: action for action in actions}
    keep: set[str] = set()
    stack = [action_id for action_id in chosen if action_id in by_id]
    while stack:
        action_id = stack.pop()
        if action_id in keep:
            continue
        keep.add(action_id)
        stack.extend(by_id[action_id].depends_on)
    return [action for action in actions if action.id in keep]

"""Making a plan: observe every kind, diff, guard, filter by target, order.

The only I/O here is the kinds' ``observe``; ``build_plan`` itself is pure.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

from pydantic import BaseModel

from reconciler.engine.actions import Action, AddressMessage, Plan, summarize
from reconciler.engine.kind import Diff, Kind, Observation, RunContext
from reconciler.engine.ordering import resolve_dependencies, with_dependencies
from reconciler.errors import PlanError, ReconcilerError

log = logging.getLogger("reconciler.plan")


def matches_target(address: str, targets: tuple[str, ...] | list[str]) -> bool:
    """True when ``address`` is one of ``targets`` (exact, or a glob like ``replica:*``)."""
    return any(address == target or fnmatch.fnmatchcase(address, target) for target in targets)


def kind_of(address: str, kinds: list[Kind]) -> Kind:
    """The kind that owns ``address`` (by its prefix before the first ':').

    Raises PlanError when no loaded kind has that prefix.
    """
    prefix = address.split(":", 1)[0]
    for kind in kinds:
        if kind.address_prefix == prefix or prefix in kind.other_address_prefixes:
            return kind
    raise PlanError(f"no resource kind handles addresses '{prefix}:…' (from {address}); is a plugin missing?")


def observe_kind(kind: Kind, desired: BaseModel, ctx: RunContext) -> Observation:
    """Run one kind's observer; a failure of the whole kind becomes an error on ``<prefix>:*``."""
    try:
        return kind.observe(desired, ctx)
    except ReconcilerError as error:
        return Observation(errors=[AddressMessage(address=f"{kind.address_prefix}:*", message=str(error))])
    except Exception as error:  # a bug in a kind must not hide the other kinds' plans
        log.debug("observer of %s failed", kind.name, exc_info=True)
        message = f"observing failed unexpectedly: {type(error).__name__}: {error}"
        return Observation(errors=[AddressMessage(address=f"{kind.address_prefix}:*", message=message)])


def observe_all(kinds: list[Kind], desired: BaseModel, ctx: RunContext) -> dict[str, Observation]:
    """Every kind's observation, keyed by kind name."""
    return {kind.name: observe_kind(kind, desired, ctx) for kind in kinds}


def guard_empty_desired(kind: Kind, desired: BaseModel, diff: Diff) -> Diff:
    """A kind whose config declares nothing never destroys what it finds: its
    destructive actions are dropped and the plan says why."""
    destructive = [action for action in diff.actions if action.destructive]
    if not destructive or kind.addresses(desired):
        return diff
    error = AddressMessage(
        address=f"{kind.address_prefix}:*",
        message=(
            f"refusing {len(destructive)} destructive action(s): the config declares no {kind.name} at all, "
            "which looks like a mistake rather than a wish to delete everything; declare what must be kept"
        ),
    )
    return Diff(
        actions=[action for action in diff.actions if not action.destructive],
        notes=diff.notes,
        errors=[*diff.errors, error],
        warnings=diff.warnings,
    )


@dataclass
class Planned:
    """A plan and the observations it was made from (apply re-uses them)."""

    plan: Plan
    observations: dict[str, Observation]


def build_plan(
    kinds: list[Kind],
    desired: BaseModel,
    observations: dict[str, Observation],
    config_sha256: str,
    targets: tuple[str, ...] = (),
) -> Plan:
    """Pure: combine every kind's diff into one ordered plan."""
    actions: list[Action] = []
    notes: list[AddressMessage] = []
    errors: list[AddressMessage] = []
    warnings: list[AddressMessage] = []
    for kind in kinds:
        observation = observations[kind.name]
        try:
            diff = guard_empty_desired(kind, desired, kind.diff(desired, observation))
        except ReconcilerError as error:
            diff = Diff(errors=[AddressMessage(address=f"{kind.address_prefix}:*", message=str(error))])
        actions.extend(diff.actions)
        notes.extend(diff.notes)
        warnings.extend(diff.warnings)
        errors.extend(observation.errors)
        errors.extend(diff.errors)
    ordered = resolve_dependencies(actions)
    if targets:
        ordered = with_dependencies(ordered, [a.id for a in ordered if matches_target(a.address, targets)])
        notes = [note for note in notes if matches_target(note.address, targets)]
        warnings = [warning for warning in warnings if matches_target(warning.address, targets)]
        errors = [e for e in errors if matches_target(e.address, targets) or e.address.endswith(":*")]
    return Plan(
        config_sha256=config_sha256,
        applyable=bool(ordered) and not errors,
        targets=list(targets),
        actions=ordered,
        notes=notes,
        errors=list(dict.fromkeys(errors)),
        warnings=list(dict.fromkeys(warnings)),
        summary=summarize(ordered),
    )


def unmatched_target_error(targets: tuple[str, ...], known: list[str]) -> PlanError | None:
    """The error for the first of ``targets`` that matches none of the ``known`` addresses (with
    the closest one as a hint), or None when every target matches something. Pure."""
    import difflib

    for target in targets:
        if not any(matches_target(address, (target,)) for address in known):
            close = difflib.get_close_matches(target, known, n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else (
                f"; the config's addresses are e.g. {', '.join(sorted(known)[:3])}" if known else
                "; the config declares nothing")
            return PlanError(f"--target {target!r} matches no address{hint}")
    return None


def make_plan(kinds: list[Kind], desired: BaseModel, config_sha256: str, ctx: RunContext) -> Planned:
    """Observe the world and plan. Never changes the world.

    Raises PlanError when a ``--target`` matches no address the config declares (checked before
    observing) nor any the plan found (e.g. a file to remove).
    """
    declared = [address for kind in kinds for address in kind.addresses(desired)]
    undeclared = tuple(target for target in ctx.targets if unmatched_target_error((target,), declared))
    observations = observe_all(kinds, desired, ctx)
    planned = Planned(build_plan(kinds, desired, observations, config_sha256, ctx.targets), observations)
    if undeclared:  # perhaps an address only the world has (a file to remove): else a typo
        found = [action.address for action in planned.plan.actions] + [
            message.address for message in (*planned.plan.errors, *planned.plan.notes)]
        error = unmatched_target_error(undeclared, declared + found)
        if error is not None:
            raise error
    return planned


def stale_reasons(saved: Plan, kinds: list[Kind], desired: BaseModel, config_sha256: str, ctx: RunContext) -> list[str]:
    """Why a saved plan no longer matches the world (empty when it still does).

    Re-observes only the kinds the plan's actions belong to, then asks each kind
    for the precondition each action would have now.
    """
    reasons: list[str] = []
    if saved.config_sha256 != config_sha256:
        reasons.append("the config file changed since the plan was made")
    owners = {action.id: kind_of(action.address, kinds) for action in saved.actions}
    involved = [kind for kind in kinds if kind in owners.values()]
    observations = observe_all(involved, desired, ctx)
    for action in saved.actions:
        kind = owners[action.id]
        observation = observations[kind.name]
        failed = [e.message for e in observation.errors if e.address in (action.address, f"{kind.address_prefix}:*")]
        if failed:
            reasons.append(f"{action.address}: cannot observe it now ({failed[0]})")
            continue
        now = kind.recheck(action, desired, observation)
        if now is None:
            reasons.append(f"{action.address}: {action.kind} is no longer needed")
        elif now != action.precondition:
            reasons.append(f"{action.address}: what {action.kind} relies on changed since the plan was made")
    return reasons

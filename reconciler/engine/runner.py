"""The operations the CLI offers, as library calls: plan, apply (saved or fresh), reconcile once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from reconciler.config.loader import LoadedConfig
from reconciler.engine.actions import FORMAT_VERSION, Plan
from reconciler.engine.executor import ApplyReport, execute
from reconciler.engine.kind import Kind, RunContext
from reconciler.engine.planner import Planned, kind_of, make_plan, stale_reasons
from reconciler.errors import LockError, PlanError
from reconciler.hints import command
from reconciler.state import lock
from reconciler.state.journal import Journal, run_of_plan

log = logging.getLogger("reconciler")


def read_plan(path: Path) -> Plan:
    """Load a saved plan file.

    Raises PlanError when it is missing, not JSON, of another format version, or malformed.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan file; make one with {command('plan', '-o', str(path))}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PlanError(f"{path}: not a reconciler plan file ({error})") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        version = raw.get("format_version") if isinstance(raw, dict) else None
        raise PlanError(
            f"{path}: plan format_version {version!r} is not {FORMAT_VERSION}; make a new plan with this reconciler"
        )
    try:
        return Plan.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PlanError(f"{path}: malformed plan file at '{where}': {first['msg']}") from None


@dataclass
class ApplyOutcome:
    plan: Plan
    report: ApplyReport
    run_id: str


def check_saved_plan(plan: Plan, config: LoadedConfig, kinds: list[Kind], ctx: RunContext) -> None:
    """Refuse a saved plan that has errors, was applied already, or is stale.

    Raises PlanError saying which and what to run next.
    """
    if plan.errors:
        first = plan.errors[0]
        raise PlanError(
            f"the saved plan has {len(plan.errors)} error(s) (first: {first.address}: {first.message}); "
            "fix them and run plan again"
        )
    previous = run_of_plan(ctx.state, plan.plan_id)
    if previous is not None:
        raise PlanError(
            f"this plan was already applied (run {previous.run_id}, {previous.started_at:%Y-%m-%d %H:%M} UTC, "
            f"{previous.status}); run plan again"
        )
    reasons = stale_reasons(plan, kinds, config.model, config.sha256, ctx)
    if reasons:
        raise PlanError("Saved plan is stale: " + "; ".join(reasons) + "; run plan again")


def apply_plan(
    plan: Plan,
    kinds: list[Kind],
    ctx: RunContext,
    operation: str,
    allow_destroy: bool,
    lock_id: str | None = None,
) -> ApplyOutcome:
    """Execute ``plan`` under a fresh journal run (the caller holds the lock ``lock_id``)."""
    journal = Journal(ctx.state, plan.plan_id, operation, lock_id)
    status = "failed"
    try:
        report = execute(plan, kinds, ctx, journal, allow_destroy)
        # a run whose plan could not observe every address did not succeed, whatever its actions did
        status = "interrupted" if report.interrupted else ("succeeded" if report.ok and not plan.errors else "failed")
    except KeyboardInterrupt:  # a second signal: stopped at once
        status = "interrupted"
        raise
    finally:
        journal.close(status)
    return ApplyOutcome(plan, report, journal.run_id)


def apply_saved(
    path: Path,
    config: LoadedConfig,
    kinds: list[Kind],
    ctx: RunContext,
    allow_destroy: bool,
    lock_timeout: float,
) -> ApplyOutcome | None:
    """``apply PLANFILE``: under the lock, refuse when stale, then run exactly that plan.

    Returns None when the plan has nothing to do.
    """
    plan = read_plan(path)
    if not plan.actions:
        return None
    with lock.run_locks(ctx.state, "apply", lock_timeout) as locks:
        locks.cover(locks_of(plan, kinds))  # what changed meanwhile, the staleness check finds
        check_saved_plan(plan, config, kinds, ctx)
        return apply_plan(plan, kinds, ctx, "apply", allow_destroy, locks.lock_id)


REPLANS = 3  # plans made under growing locks before a run gives up (others keep changing its addresses)


def locks_of(plan: Plan, kinds: list[Kind]) -> dict[str, bool]:
    """The addresses ``plan``'s actions need locked, each exclusive or shared (Kind.locks)."""
    return lock.addresses_of((address, exclusive) for action in plan.actions
                             for address, exclusive in kind_of(action.address, kinds).locks(action).items())


def apply_fresh(
    config: LoadedConfig,
    kinds: list[Kind],
    ctx: RunContext,
    allow_destroy: bool,
    lock_timeout: float,
    operation: str,
    confirm: Callable[[Planned], bool],
) -> tuple[Planned, ApplyOutcome | None]:
    """``apply`` / ``reconcile``: under the lock, plan, ask ``confirm``, execute.

    Returns the plan and, when something ran, the outcome.
    """
    with lock.run_locks(ctx.state, operation, lock_timeout) as locks:
        for _attempt in range(REPLANS):
            locks.mark()
            planned = make_plan(kinds, config.model, config.sha256, ctx)
            # PostgreSQL: lock what the plan touches; plan again if another run changed it meanwhile
            if not planned.plan.actions or not locks.cover(locks_of(planned.plan, kinds)):
                break
            log.info("planning again: another run acted on %s while this one observed it",
                     ", ".join(sorted(locks.covered)))
        else:
            raise LockError(f"other runs kept changing what this plan touches ({', '.join(sorted(locks.covered))}) "
                            f"while it was made {REPLANS} times; run it again")
        if not planned.plan.actions or not confirm(planned):
            return planned, None
        return planned, apply_plan(planned.plan, kinds, ctx, operation, allow_destroy, locks.lock_id)

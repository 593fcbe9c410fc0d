"""Carrying out a plan: dependency order, destroy guard, journal, failure isolation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from reconciler.engine.actions import Action, Plan
from reconciler.engine.kind import Kind, RunContext
from reconciler.engine.planner import kind_of
from reconciler.errors import ReconcilerError
from reconciler.state.journal import Journal

log = logging.getLogger("reconciler.apply")

SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"  # a dependency failed or the run was stopped
PENDING = "pending"  # destructive, waiting for --allow-destroy (or depends on such an action)
INTERRUPTED = "interrupted"  # stopped part-way because the run was asked to stop (not a failure)


def _about(action: Action, status: str) -> dict[str, str]:
    """What a log line about ``action`` carries besides its text (``--log-format json`` shows it)."""
    return {"address": action.address, "action": action.kind, "status": status}


@dataclass(frozen=True)
class ActionResult:
    action: Action
    status: str
    message: str | None = None


@dataclass
class ApplyReport:
    """What happened to each action of a plan."""

    results: list[ActionResult] = field(default_factory=list)
    interrupted: bool = False

    def with_status(self, status: str) -> list[ActionResult]:
        return [result for result in self.results if result.status == status]

    @property
    def failed(self) -> list[ActionResult]:
        return self.with_status(FAILED)

    @property
    def pending(self) -> list[ActionResult]:
        return self.with_status(PENDING)

    @property
    def succeeded(self) -> list[ActionResult]:
        return self.with_status(SUCCEEDED)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.with_status(SKIPPED)


def execute(
    plan: Plan,
    kinds: list[Kind],
    ctx: RunContext,
    journal: Journal,
    allow_destroy: bool = False,
) -> ApplyReport:
    """Run the plan's actions in order (the plan is already dependency-ordered).

    An action whose dependency failed or was skipped is skipped; one whose
    dependency is pending stays pending; independent actions go on. A
    destructive action without ``allow_destroy`` is pending. When ``ctx.stop``
    is set, the current action finishes and the rest are skipped.
    """
    report = ApplyReport()
    status_of: dict[str, str] = {}
    for action in plan.actions:
        blocked = [status_of.get(dependency) for dependency in action.depends_on]
        if ctx.stop.is_set():
            report.interrupted = True
            result = ActionResult(action, SKIPPED, "the run was asked to stop before this action")
        elif FAILED in blocked or SKIPPED in blocked or INTERRUPTED in blocked:
            result = ActionResult(action, SKIPPED, "skipped because an action it depends on did not succeed")
        elif PENDING in blocked:
            result = ActionResult(action, PENDING, "waits for a destructive action that needs --allow-destroy")
        elif action.destructive and not allow_destroy:
            result = ActionResult(action, PENDING, "destructive: run again with --allow-destroy to carry it out")
        else:
            result = _run_one(action, kinds, ctx, journal)
            report.results.append(result)
            status_of[action.id] = result.status
            continue
        journal.not_run(action, result.status, result.message or "")
        log.info("%s %s: %s (%s)", action.kind, action.address, result.status, result.message,
                 extra=_about(action, result.status))
        report.results.append(result)
        status_of[action.id] = result.status
    if INTERRUPTED in status_of.values() or (ctx.stop.is_set() and len(status_of) < len(plan.actions)):
        report.interrupted = True
    return report


def _run_one(action: Action, kinds: list[Kind], ctx: RunContext, journal: Journal) -> ActionResult:
    entry = journal.started(action)
    log.info("%s %s: started (%s)", action.kind, action.address, action.reason, extra=_about(action, "started"))
    try:
        message = kind_of(action.address, kinds).apply(action, ctx)
    except ReconcilerError as error:
        if ctx.stop.is_set():  # it stopped because it was asked to: the next run finishes it
            journal.finished(entry, INTERRUPTED, error=str(error))
            log.warning("%s %s: interrupted: %s", action.kind, action.address, error,
                        extra=_about(action, INTERRUPTED))
            return ActionResult(action, INTERRUPTED, str(error))
        journal.finished(entry, FAILED, error=str(error))
        log.error("%s %s: failed: %s", action.kind, action.address, error, extra=_about(action, FAILED))
        return ActionResult(action, FAILED, str(error))
    except Exception as error:  # noqa: BLE001 - one broken action must not stop independent ones
        text = f"unexpected {type(error).__name__}: {error}"
        log.debug("action %s failed", action.id, exc_info=True)
        journal.finished(entry, FAILED, error=text)
        log.error("%s %s: failed: %s", action.kind, action.address, text, extra=_about(action, FAILED))
        return ActionResult(action, FAILED, text)
    journal.finished(entry, SUCCEEDED, result=message)
    log.info("%s %s: done%s", action.kind, action.address, f" ({message})" if message else "",
             extra=_about(action, SUCCEEDED))
    return ActionResult(action, SUCCEEDED, message)

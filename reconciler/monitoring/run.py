"""What one run leaves behind for monitoring: when it ran, how it ended, what it found."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.engine.actions import Plan
    from reconciler.engine.executor import ApplyReport


@dataclass
class RunSummary:
    """One ``plan``, ``apply`` or ``reconcile`` as monitoring sees it.

    ``plan`` is the plan the run made (None when it failed before planning), ``report`` what
    the apply did (None for a plan, or when nothing ran), ``error`` the one-line error that
    ended the run early, if any. ``declared`` holds every address the config declares.
    """

    command: str
    started: float
    finished: float = 0.0
    exit_code: int = 1
    plan: Plan | None = None
    report: ApplyReport | None = None
    error: str | None = None
    declared: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)

    @property
    def success(self) -> bool:
        """No error: exit 0, or 2 (changes or destructive actions waiting, nothing failed)."""
        return self.exit_code in (0, 2)

    @property
    def complete(self) -> bool:
        """The plan covered the whole config (no --target): address-level figures may be replaced."""
        return self.plan is not None and not self.plan.targets

    def counts(self) -> dict[str, int]:
        """Actions by outcome: succeeded, failed, skipped, pending (apply) or planned (plan)."""
        if self.report is not None:
            found: dict[str, int] = {}
            for result in self.report.results:
                found[result.status] = found.get(result.status, 0) + 1
            return found
        return {"planned": len(self.plan.actions)} if self.plan is not None else {}

    def text(self) -> str:
        """A few lines for a health-check body or a failure notification (no secrets)."""
        from reconciler.secrets import redact

        lines = [f"reconciler {self.command} on {self.host}: exit {self.exit_code} "
                 f"({'ok' if self.success else 'FAILED'}) after {max(self.finished - self.started, 0):.1f}s"]
        if self.error:
            lines.append(f"error: {self.error}")
        if self.plan is not None:
            for item in self.plan.errors:
                lines.append(f"error: {item.address}: {item.message}")
            for item in self.plan.warnings:
                lines.append(f"warning: {item.address}: {item.message}")
            pending = [action for action in self.plan.actions if action.destructive]
            if pending and (self.report is None or self.report.pending):
                names = ", ".join(f"{a.address} ({a.kind})" for a in pending[:10])
                lines.append(f"destructive actions waiting for --allow-destroy: {names}"
                             + (f" and {len(pending) - 10} more" if len(pending) > 10 else ""))
        if self.report is not None:
            for result in self.report.failed:
                lines.append(f"failed: {result.action.address} ({result.action.kind}): {result.message}")
        counts = self.counts()
        if counts:
            lines.append("actions: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
        return redact("\n".join(lines))

"""What the report shows, read from the world and the state store (no changes made): the status
of a plan made now and of the last run, then each resource kind's own section
(``Kind.report_section``: replica completeness, backup freshness, projects...), with the
measurements runs recorded (engine/history.py) for its history charts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.report import ReportContext, ReportSection
from reconciler.errors import ReconcilerError

log = logging.getLogger("reconciler.report")


@dataclass
class Status:
    """What the world looked like when the report was made: a plan made then (read-only), and
    the last run the journal recorded."""

    observed_at: datetime | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)  # address -> messages
    notes: list[tuple[str, str]] = field(default_factory=list)  # (address, message), e.g. "waiting: …"
    warnings: list[tuple[str, str]] = field(default_factory=list)  # needs the operator, nothing failed
    destructive: list[dict[str, Any]] = field(default_factory=list)  # pending destructive actions
    planned: dict[str, int] = field(default_factory=dict)  # other actions a run would take, by kind
    last_run: dict[str, Any] | None = None
    journal: list[dict[str, Any]] = field(default_factory=list)  # the last entries

    def error_of(self, address: str) -> str | None:
        """The errors of ``address`` (or of its whole kind), joined; None when it was observed."""
        kind = address.split(":", 1)[0]
        found = self.errors.get(address, []) + self.errors.get(f"{kind}:*", [])
        return "; ".join(found) if found else None


@dataclass
class Report:
    generated_at: datetime
    sections: list[ReportSection] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    status: Status = field(default_factory=Status)
    context: ReportContext | None = None

    @property
    def counts(self) -> list[str]:
        """The sections' short counts ("3 replicas"), in page order."""
        return [section.count for section in self.sections if section.count]


def collect_status(app: Any, report: Report) -> None:
    """Observe now (a plan: reads only) and read the journal's last run, so that nothing in the
    report is shown as fine that could not be seen: every address whose observation failed is
    listed with its error, and its figures are marked as not current."""
    from reconciler.engine.planner import make_plan
    from reconciler.state.journal import entries, last_run

    config = app.config
    planned = make_plan(app.kinds, config.model, config.sha256, app.run_context(()))
    status = report.status
    status.observed_at = planned.plan.created_at
    for error in planned.plan.errors:
        status.errors.setdefault(error.address, []).append(error.message)
    status.notes = [(note.address, note.message) for note in planned.plan.notes]
    status.warnings = [(item.address, item.message) for item in planned.plan.warnings]
    for action in planned.plan.actions:
        if action.destructive:
            status.destructive.append({"address": action.address, "kind": action.kind, "reason": action.reason,
                                       "files": action.file_count, "bytes": action.details.get("bytes")})
        else:
            status.planned[action.kind] = status.planned.get(action.kind, 0) + 1
    run = last_run(app.read_store)
    if run is not None:
        status.last_run = {"operation": run.operation, "status": run.status, "who": run.who,
                           "started_at": run.started_at, "finished_at": run.finished_at}
        status.journal = [{"address": entry.address, "kind": entry.kind, "status": entry.status,
                           "at": entry.finished_at or entry.started_at, "message": entry.error or entry.result or ""}
                          for entry in entries(app.read_store, run.run_id)[-10:]]


def collect_sections(app: Any, report: Report) -> None:
    """Every kind's section (``Kind.report_section``), in their order. A kind whose section
    cannot be made is named among the problems; the others are still shown."""
    from reconciler.engine.history import read_history

    store = app.read_store
    context = ReportContext(desired=app.config.model, base_dir=app.config.base_dir, state=store,
                            generated_at=report.generated_at, errors=report.status.errors,
                            read_history=lambda prefix, metric: read_history(store, prefix, metric))
    report.context = context
    for kind in app.kinds:
        try:
            section = kind.report_section(app.config.model, context)
        except (ReconcilerError, OSError) as error:
            log.debug("report section of %s failed", kind.name, exc_info=True)
            report.problems.append(f"{kind.name}: the report section could not be made: {error}")
            continue
        if section is not None:
            report.sections.append(section)
            report.problems.extend(section.problems)
    report.sections.sort(key=lambda section: section.order)


def collect(app: Any) -> Report:
    """The whole report: observe now, read the journal, then each kind's section."""
    report = Report(generated_at=datetime.now(UTC).replace(microsecond=0))
    collect_status(app, report)
    collect_sections(app, report)
    return report

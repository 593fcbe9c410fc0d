"""Commands that observe and change the world: plan, show, apply, reconcile, force-unlock, history."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from reconciler import hints
from reconciler.cli.app import App, setup_logging
from reconciler.engine import memo
from reconciler.engine.executor import ApplyReport
from reconciler.engine.planner import Planned, make_plan, stale_reasons
from reconciler.engine.runner import apply_fresh, apply_saved, read_plan
from reconciler.errors import ReconcilerError
from reconciler.fsutil import atomic_write_text
from reconciler.monitoring.run import RunSummary
from reconciler.render import FORMATS, render_plan
from reconciler.state import journal, lock
from reconciler.units import parse_duration

log = logging.getLogger("reconciler")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

target_option = click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="ADDR",
    help="Limit to this address (repeatable; globs like 'replica:*' allowed). The result may be incomplete.",
)
lock_timeout_option = click.option(
    "--lock-timeout",
    default="0s",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for another run's lock (e.g. 30s, 5m) before failing.",
)
full_scan_option = click.option(
    "--full-scan", is_flag=True, help="Re-read everything, skipping the fast paths (e.g. unchanged directories)."
)


def _duration_seconds(text: str, option: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


STOPPED_BY: list[int] = []  # the signal that asked this process to stop, once one did


def interrupted_exit() -> int:
    """The exit code of a run stopped by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + (STOPPED_BY[0] if STOPPED_BY else signal.SIGINT)


@contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """The first SIGTERM/SIGINT sets ``event``: the current action ends cleanly (or stops at its
    next safe point) and is recorded as interrupted, the rest is skipped, and the run exits
    128 + the signal's number. A second signal stops at once."""

    def handler(signum: int, _frame: Any) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        STOPPED_BY[:] = [signum]
        log.warning("received %s: stopping after the current action (again to stop at once)",
                    signal.Signals(signum).name)
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report_lines(report: ApplyReport) -> list[str]:
    lines = []
    for result in report.failed:
        lines.append(f"Failed: {result.action.address} ({result.action.kind}): {result.message}")
    for result in report.with_status("interrupted"):
        lines.append(f"Interrupted: {result.action.address} ({result.action.kind}): {result.message}")
    for result in report.with_status("skipped"):
        lines.append(f"Skipped: {result.action.address} ({result.action.kind}): {result.message}")
    pending = report.pending
    if pending:
        names = ", ".join(f"{r.action.address} ({r.action.kind})" for r in pending)
        lines.append(f"Pending destructive (run with --allow-destroy): {names}")
    counts = {status: len(report.with_status(status))
              for status in ("succeeded", "failed", "interrupted", "skipped", "pending")}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    ending = "Apply interrupted: " if report.interrupted else "Apply complete: "
    lines.append(ending + (summary or "nothing run") + ".")
    return lines


def _keep_memo(app: App, planned: Planned, text: str | None = None) -> None:
    """Keep the no-change memo of a run of the whole config that found nothing to do, with
    the plan's ``text`` (rendered here when not given), or drop it (engine/memo.py). Never with
    [monitoring]: a replayed run would write no metrics and send no ping."""
    from reconciler.monitoring.hooks import configured

    memo.update(app.store, app.config_path, app.config.sha256, app.kinds, planned,
                lambda: text if text is not None else render_plan(planned.plan, "text"),
                allowed=not configured(app.config.model.monitoring))  # type: ignore[attr-defined]


def _record_history(app: App, planned: Planned, command: str) -> None:
    """Record every kind's figures for the report's history (engine/history.py) after a run of
    the whole config; figures of addresses this run could not observe are left out. Never fails
    the run: a state that cannot take them, or a kind's failing figures, is a warning."""
    if planned.plan.targets:
        return
    from reconciler.engine.history import measure_all, record

    try:
        failed = {error.address for error in planned.plan.errors}
        record(app.store, measure_all(app.kinds, app.config.model, app.run_context(), failed), command)
    except Exception as error:  # the history is a nicety: it never fails a run that did its work
        log.warning("the report's history was not recorded: %s", error)
        log.debug("recording the history failed", exc_info=True)


def _monitored(app: App, command: str, body: Callable[[RunSummary], int]) -> int:
    """``body`` run with ``[monitoring]``'s start and end (metrics file, health-check pings,
    failure command); see reconciler/monitoring/hooks.py."""
    from reconciler.monitoring.hooks import configured, kind_samples, monitored

    desired = app.config.model
    section = desired.monitoring  # type: ignore[attr-defined]
    if not configured(section):
        return body(RunSummary(command=command, started=0.0))
    declared = [address for kind in app.kinds for address in kind.addresses(desired)]
    return monitored(section, command, declared, lambda: kind_samples(app.kinds, desired, app.store), body)


@click.command()
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan (JSON).")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing changes, 2 when something would, 1 on error.")
@target_option
@full_scan_option
@click.pass_obj
def plan(
    app: App, out: Path | None, output_format: str, detailed_exitcode: bool, targets: tuple[str, ...], full_scan: bool
) -> int:
    """Observe the world and show what apply would change. Never changes the world."""
    return _monitored(app, "plan", lambda summary: _plan(app, summary, out, output_format, detailed_exitcode,
                                                         targets, full_scan))


def _plan(app: App, summary: RunSummary, out: Path | None, output_format: str, detailed_exitcode: bool,
          targets: tuple[str, ...], full_scan: bool) -> int:
    config = app.config
    ctx = app.run_context(targets, full_scan=full_scan)
    planned = make_plan(app.kinds, config.model, config.sha256, ctx)
    summary.plan = planned.plan
    if targets:
        log.warning("the plan is limited to %s and may be incomplete", ", ".join(targets))
    if out is not None:
        atomic_write_text(out, planned.plan.to_json())
        click.echo(f"Saved the plan to {out}; apply it with {hints.command('apply', str(out))}.", err=True)
    rendered = render_plan(planned.plan, output_format)
    click.echo(rendered, nl=False)
    _keep_memo(app, planned, rendered if output_format == "text" else None)
    _record_history(app, planned, "plan")
    if planned.plan.errors:
        return EXIT_ERROR
    if detailed_exitcode and (planned.plan.actions or planned.plan.warnings):
        return EXIT_CHANGES
    return EXIT_OK


@click.command()
@click.argument("planfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="text", show_default=True)
@click.pass_obj
def show(app: App, planfile: Path, output_format: str) -> int:
    """Render a saved plan; warn (without failing) when it is stale."""
    saved = read_plan(planfile)
    click.echo(render_plan(saved, output_format), nl=False)
    try:
        config = app.config
        reasons = stale_reasons(saved, app.kinds, config.model, config.sha256, app.run_context())
    except ReconcilerError as error:
        reasons = [f"cannot check ({error})"]
    if reasons:
        click.echo("Warning: this plan is stale: " + "; ".join(reasons), err=True)
    return EXIT_OK


@click.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-destroy", is_flag=True, help="Also carry out destructive actions.")
@target_option
@lock_timeout_option
@full_scan_option
@click.pass_obj
def apply(
    app: App,
    planfile: Path | None,
    auto_approve: bool,
    allow_destroy: bool,
    targets: tuple[str, ...],
    lock_timeout: str,
    full_scan: bool,
) -> int:
    """Make the world match the config: a saved PLANFILE exactly, or a fresh plan after confirmation."""
    timeout = _duration_seconds(lock_timeout, "--lock-timeout")
    setup_logging(app.verbosity, timestamps=True, log_format=app.log_format)
    return _monitored(app, "apply", lambda summary: _apply(app, summary, planfile, auto_approve, allow_destroy,
                                                           targets, timeout, full_scan))


def _apply(app: App, summary: RunSummary, planfile: Path | None, auto_approve: bool, allow_destroy: bool,
           targets: tuple[str, ...], timeout: float, full_scan: bool) -> int:
    config = app.config
    ctx = app.run_context(targets, full_scan=full_scan)
    with stop_on_signals(ctx.stop):
        if planfile is not None:
            if targets:
                raise click.UsageError("--target cannot be combined with a saved plan; target when you run plan")
            outcome = apply_saved(planfile, config, app.kinds, ctx, allow_destroy, timeout)
            if outcome is not None:
                summary.plan, summary.report = outcome.plan, outcome.report
            if outcome is None:
                click.echo("Nothing to do: the saved plan has no actions.")
                return EXIT_OK
        else:

            def confirm(planned: Planned) -> bool:
                click.echo(render_plan(planned.plan, "text"), nl=False)
                if auto_approve:
                    return True
                if not sys.stdin.isatty():
                    raise click.UsageError("refusing to apply without confirmation: pass --auto-approve")
                return click.confirm(f"Apply these {len(planned.plan.actions)} action(s)?", default=False)

            planned, outcome = apply_fresh(config, app.kinds, ctx, allow_destroy, timeout, "apply", confirm)
            summary.plan, summary.report = planned.plan, outcome.report if outcome is not None else None
            text = None if planned.plan.actions else render_plan(planned.plan, "text")
            _keep_memo(app, planned, text)
            _record_history(app, planned, "apply")
            if outcome is None:
                if text is not None:
                    click.echo(text, nl=False)
                else:
                    click.echo("Apply cancelled.")
                return EXIT_ERROR if planned.plan.errors else EXIT_OK
    for line in _report_lines(outcome.report):
        click.echo(line)
    if outcome.report.interrupted:
        return interrupted_exit()
    failed = outcome.report.failed or outcome.plan.errors
    return EXIT_ERROR if failed else EXIT_OK


def _reconcile_once(app: App, allow_destroy: bool, targets: tuple[str, ...], timeout: float, full_scan: bool,
                    stop: threading.Event) -> int:
    return _monitored(app, "reconcile", lambda summary: _reconcile_body(app, summary, allow_destroy, targets,
                                                                         timeout, full_scan, stop))


def _reconcile_body(app: App, summary: RunSummary, allow_destroy: bool, targets: tuple[str, ...], timeout: float,
                    full_scan: bool, stop: threading.Event) -> int:
    config = app.config
    ctx = app.run_context(targets, full_scan=full_scan)
    ctx.stop = stop
    planned, outcome = apply_fresh(config, app.kinds, ctx, allow_destroy, timeout, "reconcile", lambda planned: True)
    summary.plan, summary.report = planned.plan, outcome.report if outcome is not None else None
    _keep_memo(app, planned)
    _record_history(app, planned, "reconcile")
    for error in planned.plan.errors:
        log.error("%s: %s", error.address, error.message, extra={"address": error.address})
    for warning in planned.plan.warnings:
        log.warning("%s: %s", warning.address, warning.message, extra={"address": warning.address})
    for note in planned.plan.notes:
        log.info("%s: %s", note.address, note.message, extra={"address": note.address})
    # A warning (nothing failed, but an address needs the operator) exits 2, never "converged".
    attention = EXIT_CHANGES if planned.plan.warnings else EXIT_OK
    if outcome is None:
        log.info("converged: nothing to do" if not planned.plan.errors and not planned.plan.warnings
                 else "nothing to do where observing worked")
        return EXIT_ERROR if planned.plan.errors else attention
    for line in _report_lines(outcome.report):
        log.info("%s", line)
    if outcome.report.interrupted:
        return interrupted_exit()
    if outcome.report.failed or planned.plan.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if outcome.report.pending else attention


@click.command()
@click.option("--allow-destroy", is_flag=True,
              help="Also carry out destructive actions (else listed as pending, exit 2).")
@click.option("--watch", "watch", metavar="INTERVAL", help="Keep reconciling every INTERVAL (e.g. 5m) until stopped.")
@target_option
@lock_timeout_option
@full_scan_option
@click.pass_obj
def reconcile(
    app: App, allow_destroy: bool, watch: str | None, targets: tuple[str, ...], lock_timeout: str, full_scan: bool
) -> int:
    """Plan and apply without asking, for cron and systemd timers.

    Exit 0 converged, 2 destructive actions pending, 1 error.
    """
    timeout = _duration_seconds(lock_timeout, "--lock-timeout")
    interval = _duration_seconds(watch, "--watch") if watch else None
    setup_logging(app.verbosity, timestamps=True, log_format=app.log_format)
    stop = threading.Event()
    with stop_on_signals(stop):
        while True:
            try:
                code = _reconcile_once(app, allow_destroy, targets, timeout, full_scan, stop)
            except ReconcilerError as error:
                if interval is None:
                    raise
                log.error("%s", error)
                code = EXIT_ERROR
            if interval is None or stop.is_set():
                return code
            log.info("next run in %s", watch)
            if stop.wait(interval):
                log.info("stopped")
                return code


@click.command("force-unlock")
@click.argument("lock_id")
@click.pass_obj
def force_unlock(app: App, lock_id: str) -> None:
    """Remove the lock row of a run that is gone but this host cannot check (another host's run on
    a shared SQLite state); a run killed on this host, or anywhere on PostgreSQL, needs none."""
    removed = lock.force_unlock(app.read_store, lock_id)
    click.echo(f"Removed lock {removed.lock_id} held by {lock.describe(removed)}.")


@click.command()
@click.option("--run", "run_id", help="Only this run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=50, show_default=True, help="How many entries, newest last.")
@click.pass_obj
def history(app: App, run_id: str | None, as_json: bool, limit: int) -> None:
    """The apply journal: what each run did to which address, on which host, and how it ended."""
    rows = journal.entries(app.read_store, run_id)[-limit:]
    runs = journal.runs(app.read_store)
    if as_json:  # each entry with how its run ended ("interrupted": killed, or stopped by a signal) and where
        click.echo(json.dumps([{**row.model_dump(mode="json"),
                                "run_status": runs[row.run_id].status if row.run_id in runs else None,
                                "run_who": runs[row.run_id].who if row.run_id in runs else None,
                                "host": journal.host_of(runs.get(row.run_id))} for row in rows], indent=2))
        return
    if not rows:
        click.echo(f"No run of {run_id} in the journal." if run_id else "No runs in the journal yet.")
        return
    for row in rows:
        extra = row.error or row.result or ""
        host = journal.host_of(runs.get(row.run_id)) or "?"
        click.echo(f"{row.started_at:%Y-%m-%d %H:%M:%S} {row.run_id} {host} {row.status:<9} {row.kind} {row.address}"
                   + (f": {extra}" if extra else ""))


COMMANDS = [plan, show, apply, reconcile, force_unlock, history]

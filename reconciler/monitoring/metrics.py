"""Prometheus metrics for node_exporter's textfile collector.

One file holds the last run of every command (``plan``, ``apply``, ``reconcile``: labelled
``command``) and the state of every address as the last complete plan saw it, with the time
it was observed, so a dashboard never shows old figures as current. Each run rewrites the
file atomically (a temporary name in the same directory, then a rename: the collector never
reads half a file), keeping the other commands' samples from the previous file.

Names follow Prometheus' conventions (base units, ``_seconds``, ``_bytes``,
``_timestamp_seconds``); every sample is a gauge. docs/monitoring.md lists them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.monitoring.run import RunSummary

RUN_METRICS = {
    "reconciler_last_run_start_timestamp_seconds": "When the last run of this command started (Unix time).",
    "reconciler_last_run_end_timestamp_seconds": "When the last run of this command ended (Unix time).",
    "reconciler_last_run_duration_seconds": "How long the last run of this command took.",
    "reconciler_last_run_exit_code": "Exit code of the last run: 0 converged, 2 changes or destructive actions "
                                     "waiting, 1 error.",
    "reconciler_last_run_success": "1 when the last run of this command ended without error (exit 0 or 2), else 0.",
    "reconciler_last_run_actions": "Actions of the last run by outcome (succeeded, failed, skipped, pending, planned).",
}
ADDRESS_METRICS = {
    "reconciler_observed_timestamp_seconds": "When the address figures below were observed (the last complete plan).",
    "reconciler_address_up": "1 when the address was observed without error, 0 when it could not be (see errors).",
    "reconciler_address_errors": "Errors reported for the address by the last complete plan.",
    "reconciler_address_warnings": "Warnings for the address (it needs the operator though nothing failed, e.g. a "
                                   "removable replica offline past stale_after).",
    "reconciler_address_pending_actions": "Actions planned for the address and not (yet) carried out, by action "
                                          "and whether it is destructive.",
}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One gauge sample: a metric name, its labels and value, and the metric's help text."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    help: str = ""

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def sample(name: str, value: float, help: str = "", **labels: str) -> Sample:
    return Sample(name, float(value), tuple(sorted(labels.items())), help)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda match: "\n" if match.group(1) == "n" else match.group(1), value)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def render(samples: list[Sample]) -> str:
    """The text exposition format: samples grouped by metric, each group with HELP and TYPE."""
    by_name: dict[str, list[Sample]] = {}
    helps: dict[str, str] = {}
    for item in samples:
        by_name.setdefault(item.name, []).append(item)
        helps.setdefault(item.name, item.help or RUN_METRICS.get(item.name) or ADDRESS_METRICS.get(item.name, ""))
    lines = []
    for name in sorted(by_name):
        help_text = (helps[name] or name).replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for item in sorted(by_name[name], key=lambda s: s.labels):
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in item.labels)
            lines.append(f"{name}{{{labels}}} {_number(item.value)}" if labels else f"{name} {_number(item.value)}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> list[Sample]:
    """The samples of a file ``render`` wrote (HELP texts from the HELP lines); other lines are skipped."""
    helps: dict[str, str] = {}
    found = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            helps[name] = help_text.replace("\\n", "\n").replace("\\\\", "\\")
            continue
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = tuple(sorted((key, _unescape(value)) for key, value in _LABEL.findall(match.group(2) or "")))
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        found.append(Sample(match.group(1), value, labels, helps.get(match.group(1), "")))
    return found


@dataclass
class Snapshot:
    """The samples of one run, split by what replaces what in the file."""

    run: list[Sample] = field(default_factory=list)  # this command's run figures
    state: list[Sample] | None = None  # address and kind figures; None: keep the previous ones


def run_samples(summary: RunSummary) -> list[Sample]:
    command = summary.command
    found = [
        sample("reconciler_last_run_start_timestamp_seconds", summary.started, command=command),
        sample("reconciler_last_run_end_timestamp_seconds", summary.finished, command=command),
        sample("reconciler_last_run_duration_seconds", max(summary.finished - summary.started, 0.0), command=command),
        sample("reconciler_last_run_exit_code", summary.exit_code, command=command),
        sample("reconciler_last_run_success", 1 if summary.success else 0, command=command),
    ]
    for status, count in summary.counts().items():
        found.append(sample("reconciler_last_run_actions", count, command=command, status=status))
    return found


def address_samples(summary: RunSummary) -> list[Sample]:
    """Per address: up, errors, pending actions; empty when the run made no complete plan."""
    plan = summary.plan
    if plan is None:
        return []
    errors: dict[str, int] = {}
    for item in plan.errors:
        errors[item.address] = errors.get(item.address, 0) + 1
    warnings: dict[str, int] = {}
    for item in plan.warnings:
        warnings[item.address] = warnings.get(item.address, 0) + 1
    broken_kinds = {address.split(":", 1)[0] for address in errors if address.endswith(":*")}
    found = [sample("reconciler_observed_timestamp_seconds", plan.created_at.timestamp())]
    for address in sorted(set(summary.declared) | set(errors) | set(warnings)):
        kind = address.split(":", 1)[0]
        down = address in errors or kind in broken_kinds
        found.append(sample("reconciler_address_up", 0 if down else 1, address=address, kind=kind))
        found.append(sample("reconciler_address_errors", errors.get(address, 0), address=address, kind=kind))
        found.append(sample("reconciler_address_warnings", warnings.get(address, 0), address=address, kind=kind))
    done = {result.action.id for result in summary.report.results if result.status == "succeeded"} \
        if summary.report is not None else set()
    pending: dict[tuple[str, str, str], int] = {}
    for action in plan.actions:
        if action.id in done:
            continue
        key = (action.address, action.kind, "true" if action.destructive else "false")
        pending[key] = pending.get(key, 0) + 1
    for (address, action_kind, destructive), count in sorted(pending.items()):
        found.append(sample("reconciler_address_pending_actions", count, address=address, action=action_kind,
                            destructive=destructive))
    return found


def merge(previous: list[Sample], command: str, snapshot: Snapshot) -> list[Sample]:
    """The file's new samples: the previous file's run figures of other commands, this run's,
    and the address/kind figures of this run (or the previous ones when this run has none)."""
    kept = [item for item in previous if item.name in RUN_METRICS and item.label("command") != command]
    state = snapshot.state if snapshot.state is not None else [
        item for item in previous if item.name not in RUN_METRICS]
    return kept + snapshot.run + state


def write_textfile(path: Path, summary: RunSummary, kind_samples: list[Sample] | None) -> None:
    """Rewrite ``path`` (atomically) with this run's figures merged into the previous file's.

    ``kind_samples`` are the kinds' own figures (None: keep the previous ones, as the run did
    not plan the whole config). Raises OSError when the directory is not writable.
    """
    from reconciler.fsutil import atomic_write_text

    try:
        previous = parse(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError):
        previous = []
    state = None
    if summary.complete and kind_samples is not None:
        state = address_samples(summary) + kind_samples
    atomic_write_text(path, render(merge(previous, summary.command, Snapshot(run_samples(summary), state))))

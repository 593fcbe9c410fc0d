"""The metrics file's address figures, from a plan (pure): errors, warnings and pending actions
per address, every declared address present, and the text exposition format parsed back by
prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from reconciler.engine.actions import Action, AddressMessage, Plan
from reconciler.monitoring.metrics import Snapshot, address_samples, merge, parse, render, run_samples
from reconciler.monitoring.run import RunSummary


def _values(samples):
    found = {}
    for family in text_string_to_metric_families(render(samples)):
        for item in family.samples:
            found[(item.name, tuple(sorted(item.labels.items())))] = item.value
    return found


def test_errors_warnings_and_pending_actions_per_address():
    plan = Plan(config_sha256="x", errors=[AddressMessage(address="database:meteor", message="cannot reach")],
                warnings=[AddressMessage(address="replica:/mnt/backup", message="offline past stale_after")],
                actions=[Action.create(address="toy:stray", kind="remove", reason="r", facts=1, destructive=True)])
    summary = RunSummary("reconcile", started=10.0, finished=12.5, exit_code=2, plan=plan,
                         declared=["replica:/mnt/backup", "database:meteor", "replica:/mnt/other"])
    values = _values(run_samples(summary) + address_samples(summary))
    up = "reconciler_address_up"
    assert values[(up, (("address", "database:meteor"), ("kind", "database")))] == 0
    assert values[(up, (("address", "replica:/mnt/other"), ("kind", "replica")))] == 1
    assert values[("reconciler_address_warnings", (("address", "replica:/mnt/backup"), ("kind", "replica")))] == 1
    assert values[("reconciler_address_pending_actions", (("action", "remove"), ("address", "toy:stray"),
                                                          ("destructive", "true")))] == 1
    assert values[("reconciler_last_run_success", (("command", "reconcile"),))] == 1  # exit 2: nothing failed
    assert values[("reconciler_last_run_duration_seconds", (("command", "reconcile"),))] == 2.5


def test_a_run_keeps_the_other_commands_figures_and_labels_survive_escaping():
    first = RunSummary("plan", started=1.0, finished=2.0, exit_code=0,
                       plan=Plan(config_sha256="x"), declared=['replica:/mnt/"odd"\\name'])
    text = render(merge([], "plan", Snapshot(run_samples(first), address_samples(first))))
    second = RunSummary("reconcile", started=3.0, finished=4.0, exit_code=1)
    merged = render(merge(parse(text), "reconcile", Snapshot(run_samples(second), None)))
    values = _values(parse(merged))
    assert values[("reconciler_last_run_exit_code", (("command", "plan"),))] == 0
    assert values[("reconciler_last_run_exit_code", (("command", "reconcile"),))] == 1
    assert values[("reconciler_address_up", (("address", 'replica:/mnt/"odd"\\name'), ("kind", "replica")))] == 1

"""[monitoring]: a run that could not observe everything, or left destructive actions waiting,
says so in the metrics file (read with prometheus_client's own parser), in a failed health-check
ping (a real HTTP server on 127.0.0.1) and through the on_failure command; a good run pings
success; nothing of it ever fails the run; a no-change memo never hides a run from monitoring."""

from __future__ import annotations

import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


class Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        length = int(self.headers.get("Content-Length") or 0)
        Recorder.requests.append((self.path, self.rfile.read(length).decode()))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pings() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping/6f1c-check", Recorder.requests
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for item in family.samples:
            found[(item.name, tuple(sorted(item.labels.items())))] = item.value
    return found


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


NOTIFY = """import os, sys
with open(sys.argv[1], "w") as out:
    out.write("exit=" + os.environ["RECONCILER_EXIT_CODE"] + "\\n" + sys.stdin.read())
    out.write("\\nsecret-var=" + str("SECRET_DB_URI" in os.environ))
"""


def _configure(workspace, url: str, *, broken: bool) -> Path:
    (workspace.root / "src").mkdir(exist_ok=True)
    (workspace.root / "src" / "f.txt").write_text("x")
    os.utime(workspace.root / "src" / "f.txt", (1, 1))
    (workspace.root / "disk").mkdir(exist_ok=True)
    (workspace.root / "metrics").mkdir(exist_ok=True)
    script = workspace.root / "notify.py"
    script.write_text(NOTIFY)
    notified = workspace.root / "notified.txt"
    replica = "missing-disk" if broken else "disk"
    database = (f'[databases.meteor]\nuri = "mongodb://127.0.0.1:{_closed_port()}"\ndatabase = "meteor"\n'
                f'connect_timeout = "1s"\n[databases.meteor.backup]\nto = "disk"\n') if broken else ""
    workspace.write_config({"a": {"content": "x"}}, extra=f"""
[origins.o]
root = "src"

[replicas."{replica}"]

{database}
[monitoring]
textfile = "metrics/reconciler.prom"
healthcheck_url = "{url}"
healthcheck_timeout = "5s"
on_failure = ["{sys.executable}", "{script}", "{notified}"]
""")
    return notified


def test_a_failing_run_says_so_in_metrics_ping_and_notification(workspace, pings, monkeypatch):
    url, requests = pings
    monkeypatch.setenv("SECRET_DB_URI", "mongodb://svc:hunter2hunter2@db.example.org/meteor")
    (workspace.world / "stray").write_text("not declared: its removal is destructive")
    notified = _configure(workspace, url, broken=True)
    result = workspace.run("reconcile")
    assert result.code == 1, result.err

    samples = _samples(workspace.root / "metrics" / "reconciler.prom")
    assert _value(samples, "reconciler_last_run_exit_code", command="reconcile") == 1
    assert _value(samples, "reconciler_last_run_success", command="reconcile") == 0
    assert _value(samples, "reconciler_address_up", address="replica:missing-disk", kind="replica") == 0
    assert _value(samples, "reconciler_address_up", address="database:meteor", kind="database") == 0
    assert _value(samples, "reconciler_address_up", address="toy:a", kind="toy") == 1
    assert _value(samples, "reconciler_address_pending_actions", address="toy:stray", action="remove",
                  destructive="true") == 1
    assert _value(samples, "reconciler_last_run_actions", command="reconcile", status="pending") == 1

    assert [path for path, _ in requests] == ["/ping/6f1c-check/start", "/ping/6f1c-check/fail"]
    body = requests[1][1]
    assert "replica:missing-disk" in body and "database:meteor" in body and "toy:stray (remove)" in body

    text = notified.read_text()
    assert text.startswith("exit=1\n") and "replica:missing-disk" in text and "destructive actions waiting" in text
    assert "secret-var=False" in text


@pytest.mark.state_store
def test_a_good_run_pings_success_and_a_plan_keeps_the_reconcile_figures(workspace, pings):
    url, requests = pings
    notified = _configure(workspace, url, broken=False)
    assert workspace.run("reconcile").code == 0
    assert workspace.run("reconcile").code == 0  # nothing to do: still a full run (no memo replay)
    assert [path for path, _ in requests] == ["/ping/6f1c-check/start", "/ping/6f1c-check"] * 2
    assert not notified.exists()
    assert workspace.run("plan").code == 0
    samples = _samples(workspace.root / "metrics" / "reconciler.prom")
    assert _value(samples, "reconciler_last_run_success", command="reconcile") == 1
    assert _value(samples, "reconciler_last_run_success", command="plan") == 1
    assert _value(samples, "reconciler_address_up", address="replica:disk", kind="replica") == 1
    assert len(requests) == 4, "plan does not ping"


def test_monitoring_that_cannot_reach_its_targets_never_fails_the_run(workspace, pings):
    _configure(workspace, f"http://127.0.0.1:{_closed_port()}/ping/x", broken=False)
    text = workspace.config.read_text().replace('textfile = "metrics/reconciler.prom"',
                                               'textfile = "no-such-dir/reconciler.prom"')
    workspace.config.write_text(text)
    result = workspace.run("reconcile")
    assert result.code == 0, result.err
    assert "health-check ping (start)" in result.err and "cannot write the metrics file" in result.err
    assert "/ping/x" not in result.err, "the check URL is its secret"


def test_a_textfile_not_ending_in_prom_is_a_config_error(workspace):
    workspace.write_config({}, extra='\n[monitoring]\ntextfile = "metrics/reconciler.txt"\n')
    result = workspace.cli("validate")
    assert result.code == 1 and "only files ending in .prom" in result.err


def test_json_logs_carry_the_address_and_action(workspace):
    import json

    (workspace.world / "stray").write_text("x")
    workspace.write_config({"a": {"content": "x"}})
    result = workspace.run("--log-format", "json", "reconcile")
    assert result.code == 2, result.err
    lines = [json.loads(line) for line in result.err.splitlines()]
    assert any({"address": "toy:a", "action": "write", "status": "succeeded"}.items() <= line.items()
               for line in lines)
    assert any(line.get("address") == "toy:stray" and line["status"] == "pending" for line in lines)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    workspace.config.write_text("[toy\n")
    broken = workspace.run("--log-format", "json", "reconcile")
    assert broken.code == 1 and json.loads(broken.err)["level"] == "error"

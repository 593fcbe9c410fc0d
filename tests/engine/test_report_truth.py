"""The report never shows as fine what it could not see: it observes when it is made, lists
every address whose observation failed (in red, with the message), marks their figures as not
current, names the destructive actions waiting and shows the last run's outcome."""

from __future__ import annotations

import os
import socket

from tests.dom import parse_html


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_missing_disk_a_waiting_deletion_and_an_unreachable_database_are_all_shown(workspace):
    (workspace.root / "src").mkdir()
    (workspace.root / "src" / "f.txt").write_text("x")
    os.utime(workspace.root / "src" / "f.txt", (1, 1))
    (workspace.root / "disk").mkdir()
    (workspace.world / "stray").write_text("not declared")
    body = f"""
[origins.o]
root = "src"

[replicas."disk"]

[databases.meteor]
uri = "mongodb://127.0.0.1:{_closed_port()}"
database = "meteor"
connect_timeout = "1s"
[databases.meteor.backup]
to = "disk"
"""
    workspace.write_config({"a": {"content": "x"}}, extra=body)
    assert workspace.run("reconcile").code == 1  # the database cannot be reached; the copy is made
    # the backup disk is carried away: its mount point is gone
    (workspace.root / "disk").rename(workspace.root / "disk-away")
    (workspace.root / "disk-away" / "meteor").mkdir(exist_ok=True)
    workspace.write_config({"a": {"content": "x"}}, extra=body.replace('to = "disk"', 'to = "disk-away"'))
    output = workspace.root / "report.html"
    result = workspace.run("report", "--html", str(output))
    assert result.code == 0, result.err
    dom = parse_html(output.read_text())
    status = dom.find("section", id="status")[0]
    assert status["data-errors"] == "2" and status["data-destructive"] == "1"
    text = " ".join(" ".join(dom.text).split())
    assert "2 addresses could not be observed" in text
    assert "replica:disk" in text and "does not exist" in text
    assert "database:meteor" in text and "cannot reach" in text
    assert "1 destructive action waits for --allow-destroy" in text and "toy:stray" in text
    replica = dom.find("tr", data_replica="replica:disk")[0]
    assert replica["data-complete"] == "unknown" and replica["data-status"] == "error"
    assert not dom.find("p", id="all-observed")
    assert dom.find("span", id="last-run")[0]["data-status"] == "failed"
    assert dom.find("tr", data_database="meteor")[0]["data-fresh"] == "no"

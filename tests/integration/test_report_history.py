"""The report's history: runs record a few figures per origin, replica and backed-up database in
the state, and the report draws them as inline SVG (storage growth, replica lag, free space, a
backup timeline showing what retention keeps and why), checked in a real headless Chromium."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pymongo
import pytest

from reconciler.state.store import StateStore
from tests.dom import Dom
from tests.integration.conftest import make_tree
from tests.integration.test_report import CHROMIUM, chromium

EXACT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


def _series(dom: Dom, chart: str) -> dict[str, list[dict[str, str | None]]]:
    """The circles of each series (by address) of the chart ``chart``, in document order."""
    found: dict[str, list[dict[str, str | None]]] = {}
    inside = address = None
    for name, attrs in dom.elements:
        if name == "svg":
            inside = attrs.get("data-chart") == chart
        elif inside and name == "g" and attrs.get("data-address"):
            address = attrs["data-address"]
            found[address] = []
        elif inside and name == "circle" and address:
            found[address].append(attrs)
    return found


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium); .ci/run installs it")
def test_runs_record_history_and_the_report_draws_it_in_chromium(site, mongo, tmp_path):
    client = pymongo.MongoClient(mongo.uri)
    database = f"history_{uuid.uuid4().hex[:8]}"
    try:
        client[database].events.insert_many([{"n": n} for n in range(50)])
        make_tree(site.root / "origin", {"a/1.fits": "x" * 1000, "a/2.fits": "y" * 2000})
        (site.root / "replica").mkdir()
        (site.root / "backups").mkdir()
        site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n'
                   '[databases.cs.backup]\nto = "backups"\nevery = "1s"\nmethod = "python"\n'
                   '[databases.cs.backup.retention]\nkeep_last = 2\n\n'
                   '[origins.exao1]\nroot = "origin"\nsettle = "1s"\n\n[replicas."replica"]\n')
        assert site.cli("apply", "--auto-approve").code == 0
        make_tree(site.root / "origin", {"b/3.fits": "z" * 40000})
        assert site.cli("plan").code == 0  # observes: the origin grew, the replica lags
        time.sleep(1.1)  # the backup is due again ("every = 1s"): a second one
        assert site.cli("reconcile").code == 0
        time.sleep(1.1)  # a third: retention keeps two; the next plan prunes the oldest (destructive: waits)
        assert site.cli("reconcile").code == 0
        output = site.root / "report.html"
        result = site.cli("report", "--html", str(output))
        assert result.code == 0, result.err
    finally:
        client.drop_database(database)
        client.close()
    html = output.read_text()
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html), "the report must not load anything"

    dumped = chromium(tmp_path, output.as_uri(), "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Dom()
    dom.feed(dumped.stdout)
    assert dom.find("body")[0].get("data-ready") == "true"

    growth = _series(dom, "origin-growth")
    assert list(growth) == ["origin:exao1"]
    sizes = [int(point["data-value"] or 0) for point in growth["origin:exao1"]]
    assert sizes[0] == 3000 and sizes[-1] == 43000 and sizes == sorted(sizes) and len(sizes) >= 3
    lag = _series(dom, "replica-lag")
    assert list(lag) == ["replica:replica"]
    lagging = [int(point["data-value"] or 0) for point in lag["replica:replica"]]
    assert 40000 in lagging and lagging[-1] == 0  # the plan saw the new file missing; reconcile copied it
    assert _series(dom, "replica-free")["replica:replica"]
    assert _series(dom, "backup-free")["database:cs"]
    counts = _series(dom, "backup-size")["database:cs"]
    assert len(counts) >= 3 and int(counts[-1]["data-value"] or 0) > 0

    timeline = [attrs for name, attrs in dom.elements if name == "circle" and attrs.get("data-kept")]
    assert [attrs["data-kept"] for attrs in timeline] == ["no", "yes", "yes"]
    assert timeline[0]["data-why"] == "no rule of the policy keeps it: the next prune removes it"
    assert timeline[1]["data-why"] == timeline[2]["data-why"] == "last"
    assert dom.find("svg", data_chart="backup-timeline-cs")[0]["data-points"] == "3"

    times = dom.find("time")
    assert times and all(EXACT.match(attrs.get("title") or "") for attrs in times)
    text = " ".join(" ".join(dom.text).split())
    assert "3 files" in text and "3 backups" in text and "No CryoSPARC instances configured." in text
    assert "1 replica · 1 backed-up database · 0 projects" in text

    shot = Path(os.environ.get("RECONCILER_TEST_ARTIFACTS", tmp_path)) / "report-history.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    taken = chromium(tmp_path, output.as_uri(), "--window-size=1400,1600", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]

    store = StateStore(site.state_url)
    try:
        from reconciler.engine.history import count

        assert 0 < count(store) < 100  # a handful of figures per run, no more
    finally:
        store.dispose()


@pytest.mark.state_store
def test_each_instance_and_declared_project_live_data_is_recorded_and_drawn_and_an_empty_history_says_so(site, mongo):
    from reconciler.kinds.projects.generator import make_instance
    from tests.dom import parse_html

    client = pymongo.MongoClient(mongo.uri)
    database = f"history_{uuid.uuid4().hex[:8]}"
    try:
        made = make_instance(client[database], site.root / "cs", "id-cs", projects=2, jobs=1, sessions=1, movies=1)
        site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n\n'
                   '[instances.cs]\ndatabase = "cs"\ninstance_id = "id-cs"\n\n'
                   f'[projects.headline]\nuid = "P1"\ninstance = "cs"\npath = "{made[0].project_dir}"\n')
        output = site.root / "report.html"
        assert site.cli("report", "--html", str(output)).code == 0  # no run yet: nothing recorded
        before = parse_html(output.read_text())
        assert before.find("p", data_chart="instance-growth")[0]["data-empty"] == "true"
        assert "No run has measured the instances yet." in " ".join(before.text)
        assert site.cli("plan").code == 0
        client[database].workspaces.update_many({"session_uid": {"$exists": True}},
                                                {"$inc": {"data_management.raw.size": 10 ** 9}})
        assert site.cli("plan").code == 0
        assert site.cli("report", "--html", str(output)).code == 0
    finally:
        client.drop_database(database)
        client.close()
    dom = parse_html(output.read_text())
    points = _series(dom, "instance-growth")["instance:cs"]
    values = [int(point["data-value"] or 0) for point in points]
    assert len(values) == 2 and values[1] - values[0] == 2 * 10 ** 9  # two sessions, each a GB more
    declared = _series(dom, "project-growth")
    assert list(declared) == ["project:headline"]  # the declared one, named as the CLI names it
    grown = [int(point["data-value"] or 0) for point in declared["project:headline"]]
    assert len(grown) == 2 and grown[1] - grown[0] == 10 ** 9
    assert "2 projects" in " ".join(" ".join(dom.text).split())


def test_an_instance_the_run_could_not_observe_is_not_asked_again_for_figures(site, mongo):
    from reconciler.config.loader import load_config
    from reconciler.engine.registry import load_kinds
    from reconciler.kinds.projects import report
    from reconciler.kinds.projects.generator import make_instance

    client = pymongo.MongoClient(mongo.uri)
    database = f"history_{uuid.uuid4().hex[:8]}"
    try:
        made = make_instance(client[database], site.root / "cs", "id-cs", projects=1, jobs=1, sessions=1, movies=1)
        site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n\n'
                   '[instances.cs]\ndatabase = "cs"\ninstance_id = "id-cs"\n\n'
                   f'[projects.headline]\nuid = "P1"\ninstance = "cs"\npath = "{made[0].project_dir}"\n')
        desired = load_config(site.config, load_kinds()).model
        assert {item.address for item in report.measure(desired)} == {"instance:cs", "project:headline"}
        assert report.measure(desired, {"project:headline"}) == []  # its observation failed in this run
        assert report.measure(desired, {"database:cs"}) == []
        assert report.measure(desired, {"project:other"}) != []
    finally:
        client.drop_database(database)
        client.close()

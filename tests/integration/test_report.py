"""The data management report, rendered in a real headless Chromium (Debian's `chromium`,
installed by .ci/run): 500 generated projects, a replica, a backed-up database."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pymongo
import pytest

from reconciler.kinds.projects.generator import make_instance
from tests.conftest import REPO
from tests.dom import Dom
from tests.integration.conftest import make_tree

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, url],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium); .ci/run installs it")
def test_report_of_500_projects_renders_sorted_and_complete_in_chromium(site, mongo, tmp_path):
    if "postgresql" in site.state_url:
        pytest.skip("the report reads the same state either way; once is enough for a 500-project instance")
    client = pymongo.MongoClient(mongo.uri)
    database = f"report_{uuid.uuid4().hex[:8]}"
    try:
        made = make_instance(client[database], site.root / "cs", "id-cs", projects=500, jobs=1, sessions=1, movies=1)
        # one project with much more Live data, so "sort by size" has a clear winner
        client[database].workspaces.update_one({"project_uid": "P250", "session_uid": "S1"},
                                               {"$set": {"data_management.raw.size": 10 ** 12}})
        make_tree(site.root / "origin", {"a/1.fits": "x" * 100, "a/2.fits": "y" * 200})
        (site.root / "replica").mkdir()
        (site.root / "backups").mkdir()
        site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n'
                   '[databases.cs.backup]\nto = "backups"\nevery = "1d"\nmethod = "python"\n\n'
                   '[instances.cs]\ndatabase = "cs"\ninstance_id = "id-cs"\n\n'
                   f'[projects.headline]\nuid = "P1"\ninstance = "cs"\npath = "{made[0].project_dir}"\n\n'
                   '[origins.exao1]\nroot = "origin"\nsettle = "1s"\n\n[replicas."replica"]\n')
        assert site.cli("apply", "--auto-approve").code == 0
        output = site.root / "report.html"
        result = site.cli("report", "--html", str(output))
        assert result.code == 0, result.err
    finally:
        client.drop_database(database)
        client.close()
    html = output.read_text()
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html), "the report must not load anything"

    dumped = chromium(tmp_path, f"{output.as_uri()}?sort=size", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Dom()
    dom.feed(dumped.stdout)
    body = dom.find("body")[0]
    assert body.get("data-ready") == "true" and body.get("data-sorted-by") == "size"
    projects = [attrs for attrs in dom.find("details") if attrs.get("class") == "project"]
    assert len(projects) == 500
    sizes = [int(item["data-size"] or 0) for item in projects]
    assert sizes == sorted(sizes, reverse=True) and projects[0]["data-uid"] == "P250"
    assert "500 of 500 shown" in "".join(dom.text)
    replicas = [attrs for name, attrs in dom.elements if name == "tr" and attrs.get("data-replica")]
    assert [attrs["data-complete"] for attrs in replicas] == ["100.0"]
    assert dom.find("tr", data_database="cs")[0]["data-fresh"] == "yes"
    sessions = [attrs for name, attrs in dom.elements if name == "td" and attrs.get("data-datatype") == "raw"]
    assert len(sessions) == 500

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = chromium(tmp_path, f"{output.as_uri()}?open=P1", "--window-size=1400,1100", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]

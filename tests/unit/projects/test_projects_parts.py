"""The instance model's records, and the cryosparcm driver's command construction."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.drivers.cryosparcm import backup_argv, cli_argv, cli_call


def test_cryosparcm_calls_follow_the_cli_signatures() -> None:
    # The CryoSPARC v4 CLI reference: cryosparcm cli "<function>(<python literals>)".
    assert cli_argv("cryosparcm", "archive_project", "P12") == ["cryosparcm", "cli", "archive_project('P12')"]
    assert cli_call("unarchive_project", "P12", "/data/new/CS-apo") == "unarchive_project('P12', '/data/new/CS-apo')"
    assert cli_call("detach_project", "P3") == "detach_project('P3')"
    assert cli_call("attach_project", "user-1", "/data/x") == "attach_project('user-1', '/data/x')"
    assert cli_call("update_project_directory", "P3", "/d") == "update_project_directory('P3', '/d')"
    assert cli_call("update_project", "P4", {"imported_from": {"uid": "P3"}}) == \
        "update_project('P4', {'imported_from': {'uid': 'P3'}})"
    assert backup_argv("/opt/cs/bin/cryosparcm", "/backups", "meteor.archive") == [
        "/opt/cs/bin/cryosparcm", "backup", "--dir=/backups", "--file=meteor.archive"]


def test_cryosparcm_arguments_are_literals_never_code() -> None:
    call = cli_call("archive_project", "P1'); import os; os.system('rm -rf /'); ('")
    assert call.startswith("archive_project(") and call.count("'") >= 2
    assert eval(call.replace("archive_project", "str")) == "P1'); import os; os.system('rm -rf /'); ('"  # noqa: S307
    with pytest.raises(ValueError):
        cli_call("archive_project(); x", "P1")


def test_records_round_trip_and_uid_rewrite(tmp_path: Path) -> None:
    from datetime import datetime

    records = model.Records(
        project={"uid": "P12", "uid_num": 12, "title": "apo", "created_at": datetime(2026, 1, 2, tzinfo=UTC)},
        workspaces=[{"uid": "W1", "project_uid": "P12"}],
        jobs=[{"uid": "J1", "project_uid": "P12", "children": ["J2"]},
              {"uid": "J2", "project_uid": "P12", "parents": ["J1"]}])
    model.write_records(tmp_path, records)
    read = model.read_records(tmp_path)
    assert read.project == records.project and read.jobs == records.jobs
    moved = model.rewrite_uid(read, "P40")
    assert moved.project["uid"] == "P40" and moved.project["uid_num"] == 40
    assert {job["project_uid"] for job in moved.jobs} == {"P40"}
    assert moved.jobs[1]["parents"] == ["J1"]  # job-local references stay
    assert [w["project_uid"] for w in moved.workspaces] == ["P40"]


def test_corrupt_or_foreign_records_are_named(tmp_path: Path) -> None:
    model.write_records(tmp_path, model.Records({"uid": "P1"}, [], [{"uid": "J1", "project_uid": "P1"}]))
    (tmp_path / "J1" / "job.json").write_text("{not json")
    with pytest.raises(model.RecordsError, match=r"J1/job.json is not valid JSON"):
        model.read_records(tmp_path)
    (tmp_path / "J1" / "job.json").write_text('{"uid": "J9"}')
    with pytest.raises(model.RecordsError, match="does not hold the document of job J1"):
        model.read_records(tmp_path)
    (tmp_path / "project.json").unlink()
    with pytest.raises(model.RecordsError, match="project.json is missing"):
        model.read_records(tmp_path)


def test_lock_reads_json_or_a_bare_id(tmp_path: Path) -> None:
    assert model.read_lock(tmp_path) is None
    model.write_lock(tmp_path, "abc")
    assert model.read_lock(tmp_path) == "abc"
    (tmp_path / "cs.lock").write_text("legacy-id\n")
    assert model.read_lock(tmp_path) == "legacy-id"

"""Whole-instance migration, alternative A (``migration = "database"``), end to end on a real
MongoDB single-node replica set: projects whose path changes archived on the source, the
database copied from one snapshot, directories copied and verified, paths rewritten, projects
unarchived on the target, users reconciled on the copy; the rollback rule and the uid clash."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest
from sqlmodel import select

from reconciler.kinds.instances.tables import CopiedDatabase
from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc import model
from reconciler.state.store import StateStore


@pytest.fixture
def facility(site, mongo_rs, tmp_path) -> Any:
    import pymongo

    client: Any = pymongo.MongoClient(mongo_rs.uri)
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = client[f"csold_{tag}"], client[f"csnew_{tag}"]
    old = make_instance(old_db, tmp_path / "old-storage", "id-old", projects=3, jobs=3)
    site.write(f'[databases.cs-old]\nuri = "{mongo_rs.uri}"\ndatabase = "{old_db.name}"\n\n'
               f'[databases.cs-new]\nuri = "{mongo_rs.uri}"\ndatabase = "{new_db.name}"\n\n'
               '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
               '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\nmigrate_from = "old"\n'
               'migration = "database"\n'
               f'migrate_paths = {{ "{tmp_path / "old-storage"}" = "{tmp_path / "new-storage"}" }}\n\n'
               '[users."grace@example.org"]\ninstances = ["new"]\nname = "Grace Hopper"\n'
               'initial_password_env = "GRACE_PW"\n\n'
               '[users."alice@example.org"]\ninstances = ["new"]\nrole = "admin"\n')
    yield site, old_db, new_db, old, tmp_path
    client.drop_database(old_db.name)
    client.drop_database(new_db.name)
    client.close()


def _plain(items: Any) -> list[dict[str, Any]]:
    return sorted(({k: v for k, v in item.items() if k != "_id"} for item in items),
                  key=lambda item: (item.get("project_uid", ""), item["uid"]))


@pytest.mark.state_store
def test_alternative_a_archives_copies_the_database_moves_and_unarchives(facility, monkeypatch):
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    jobs_before = _plain(old_db.jobs.find({}))
    plan = json.loads(site.cli("plan", "--format", "json").out)
    order = [(action["address"], action["kind"]) for action in plan["actions"]]
    assert order[:4] == [("migration:new/P1", "migrate_archive"), ("migration:new/P2", "migrate_archive"),
                         ("migration:new/P3", "migrate_archive"), ("migration:new/database", "copy_database")]
    assert ("migration:new/P1", "migrate_copy") in order and ("migration:new/P3", "migrate_unarchive") in order
    copy_id = plan["actions"][3]["id"]
    [create] = [action for action in plan["actions"] if action["kind"] == "create_user"]
    assert copy_id in create["depends_on"], "users are reconciled on the copied database"

    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    for project in old:
        document = new_db.projects.find_one({"uid": project.uid})
        path = root / "new-storage" / project.project_dir.name
        assert document["project_dir"] == str(path) and document["archived"] is False
        assert model.read_lock(path) == "id-new"
        assert model.read_records(path).project["project_dir"] == str(path)
        sessions = [w for w in new_db.workspaces.find({"project_uid": project.uid}) if w.get("session_uid")]
        assert sessions and all(w["session_dir"].startswith(f"{path}/") for w in sessions)
        assert old_db.projects.find_one({"uid": project.uid})["archived"], "the frozen source keeps them archived"
    assert _plain(new_db.jobs.find({})) == jobs_before
    emails = sorted(address["address"] for user in new_db.users.find({}) for address in user["emails"])
    assert emails == sorted(["grace@example.org", *(address["address"] for user in old_db.users.find({})
                                                     for address in user["emails"])])
    assert new_db.users.find_one({"emails.address": "alice@example.org"})["role"] == "admin"
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_an_outdated_copy_is_refused_and_a_uid_clash_is_an_error(facility, monkeypatch):
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    first = site.cli("apply", "--auto-approve", "--target", "migration:new/database")
    assert first.code == 0, first.out + first.err
    assert new_db.projects.count_documents({}) == 3
    # someone keeps working on the source after the copy: its records are newer than the copy
    record = old[1].project_dir / model.PROJECT_FILE
    record.write_text(record.read_text())
    later = time.time() + 5
    os.utime(record, (later, later))
    plan = site.cli("plan")
    assert plan.code == 1, plan.out
    assert "refusing to go on" in plan.out + plan.err and "P2 (" in plan.out + plan.err

    new_db.client.drop_database(new_db.name)
    make_instance(new_db, root / "elsewhere", "id-new", projects=1, jobs=1)
    store = StateStore(site.state_url)  # forget the copy, as the refusal says to
    with store.session() as session:
        for row in session.exec(select(CopiedDatabase)).all():
            session.delete(row)
        session.commit()
    store.dispose()
    clash = site.cli("plan")
    assert clash.code == 1 and "uid clash" in clash.out + clash.err and "P1" in clash.out + clash.err


@pytest.mark.state_store
def test_a_migration_stopped_after_the_copy_resumes_from_its_checkpoints(facility, monkeypatch):
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    first = site.cli("apply", "--auto-approve", "--target", "migration:new/database")
    assert first.code == 0, first.out + first.err
    assert all(doc["archived"] for doc in new_db.projects.find({}))
    plan = json.loads(site.cli("plan", "--format", "json").out)
    kinds = {action["kind"] for action in plan["actions"]}
    assert "copy_database" not in kinds and "migrate_archive" not in kinds
    assert {"migrate_copy", "repoint", "migrate_unarchive", "create_user", "update_user"} <= kinds
    rest = site.cli("apply", "--auto-approve")
    assert rest.code == 0, rest.out + rest.err
    assert not any(doc["archived"] for doc in new_db.projects.find({}))
    assert new_db.projects.count_documents({}) == 3 and new_db.users.count_documents({}) == \
        old_db.users.count_documents({}) + 1
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_kill_9_during_a_database_migration_then_rerun_converges(facility, monkeypatch):
    import signal

    from tests.conftest import popen_cli

    site, old_db, new_db, old, root = facility
    big = old[0].project_dir / "J2" / "big"
    big.mkdir()
    for index in range(3000):  # the first project's copy takes a while: the kill lands inside it
        (big / f"particle_{index:05d}.mrc").write_bytes(b"y" * 4096)
    env = {"GRACE_PW": "a long enough password"}
    process = popen_cli(site.args("apply", "--auto-approve"), env=env)
    target = root / "new-storage" / old[0].project_dir.name / "J2" / "big"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if target.is_dir() and len(os.listdir(target)) >= 50:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the migration finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    time.sleep(1)  # rsync learns (PR_SET_PDEATHSIG) that its parent died
    assert new_db.projects.count_documents({}) == 3, "the database was copied before the directories"

    monkeypatch.setenv("GRACE_PW", env["GRACE_PW"])
    again = site.run("apply", "--auto-approve", env=env)
    assert again.code == 0, again.out + again.err
    assert len(os.listdir(target)) == 3000
    assert sorted(doc["uid"] for doc in new_db.projects.find({})) == ["P1", "P2", "P3"]
    assert not any(doc["archived"] for doc in new_db.projects.find({}))
    assert all(doc["project_dir"].startswith(str(root / "new-storage")) for doc in new_db.projects.find({}))
    assert new_db.users.count_documents({}) == old_db.users.count_documents({}) + 1
    assert site.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("version", ["4.6.2", "5.0.0"])
def test_a_cryosparcm_source_is_put_in_maintenance_mode_before_its_database_is_copied(facility, mongo_rs,
                                                                                       monkeypatch, tmp_path,
                                                                                       version):
    """Through the stand-in (tests/integration/cryosparcm_standin.py: no CryoSPARC runs here): the
    guide's `cryosparcm maintenancemode on` freezes the source; a queued job still holds the copy."""
    import sys
    from pathlib import Path

    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    program = tmp_path / "cryosparcm"
    program.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / 'cryosparcm_standin.py'} "
                       '"$@"\n')
    program.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    for name, value in {"CRYOSPARCM_STANDIN_URI": mongo_rs.uri, "CRYOSPARCM_STANDIN_DB": old_db.name,
                        "CRYOSPARCM_STANDIN_VERSION": version, "CRYOSPARCM_STANDIN_LOG": str(log),
                        "CRYOSPARCM_STANDIN_STATE_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    config = site.config.read_text().replace('[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n',
                                 '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n'
                                 f'driver = "cryosparcm"\ncryosparcm = "{program}"\n')
    config = "\n".join(line for line in config.splitlines() if not line.startswith("migrate_paths")) + "\n"
    site.write(config)
    job = old_db.jobs.find_one({"project_uid": "P1"})
    old_db.jobs.update_one({"_id": job["_id"]}, {"$set": {"status": "queued"}})

    plan = json.loads(site.cli("plan", "--format", "json").out)
    assert [(a["address"], a["kind"]) for a in plan["actions"] if a["address"].startswith("migration:")] == [
        ("migration:new/database", "maintenance_on")]
    waiting = " ".join(note["message"] for note in plan["notes"])
    assert f"P1/{job['uid']}" in waiting and "queued jobs never start" in waiting
    frozen = site.cli("apply", "--auto-approve")
    assert frozen.code == 0, frozen.out + frozen.err
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert ["maintenancemode", "on"] in calls and new_db.projects.count_documents({}) == 0
    assert new_db.users.count_documents({}) == 0, "users are made on the copied database, not before it"
    assert "wait for the database copy" in frozen.out, frozen.out
    again = json.loads(site.cli("plan", "--format", "json").out)
    assert not any(a["kind"] in ("maintenance_on", "copy_database") for a in again["actions"]), "on, still waiting"

    old_db.jobs.update_one({"_id": job["_id"]}, {"$set": {"status": "completed"}})
    plan = json.loads(site.cli("plan", "--format", "json").out)
    kinds = [a["kind"] for a in plan["actions"]]
    assert "copy_database" in kinds and "maintenance_on" not in kinds
    done = site.cli("apply", "--auto-approve")
    assert done.code == 0, done.out + done.err
    assert sorted(doc["uid"] for doc in new_db.projects.find({})) == ["P1", "P2", "P3"]
    assert all(model.read_lock(project.project_dir) == "id-new" for project in old)
    assert site.cli("plan", "--detailed-exitcode").code == 0

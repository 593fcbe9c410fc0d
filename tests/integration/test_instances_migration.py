"""Whole-instance migration, alternative B (``migrate_from``, ``migration = "attach"``), end to
end on a real MongoDB single-node replica set: users first, then every project of the source
detached, copied to its new path, attached under the next free uids with its Live sessions;
a kill -9 in the middle, then a re-run, converges with nothing lost or attached twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from sqlmodel import select

from reconciler.kinds.instances.tables import MigratedProject
from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc import model
from reconciler.state.store import StateStore
from tests.conftest import REPO, popen_cli
from tests.integration.conftest import tree


@pytest.fixture
def facility(site, mongo_rs, tmp_path) -> Any:
    import pymongo

    client: Any = pymongo.MongoClient(mongo_rs.uri)
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = client[f"csold_{tag}"], client[f"csnew_{tag}"]
    old = make_instance(old_db, tmp_path / "old-storage", "id-old", projects=3, jobs=3)
    make_instance(new_db, tmp_path / "new-existing", "id-new", projects=1, jobs=2, seed=2)
    users = list(new_db.users.find({}))  # the same people, other ids (as on any other instance)
    new_db.users.delete_many({})
    new_db.users.insert_many([{**user, "_id": f"new-{user['_id']}"} for user in users])
    for user in users:
        new_db.projects.update_many({"owner_user_id": user["_id"]}, {"$set": {"owner_user_id": f"new-{user['_id']}"}})
    site.write(f'[databases.cs-old]\nuri = "{mongo_rs.uri}"\ndatabase = "{old_db.name}"\n\n'
               f'[databases.cs-new]\nuri = "{mongo_rs.uri}"\ndatabase = "{new_db.name}"\n\n'
               '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
               '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\nmigrate_from = "old"\n'
               f'migrate_paths = {{ "{tmp_path / "old-storage"}" = "{tmp_path / "new-storage"}" }}\n\n'
               '[users."grace@example.org"]\ninstances = ["new"]\nname = "Grace Hopper"\n'
               'initial_password_env = "GRACE_PW"\n')
    yield site, old_db, new_db, old, tmp_path
    client.drop_database(old_db.name)
    client.drop_database(new_db.name)
    client.close()


def _without(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in (*keys, "_id")}


def _data(root: Any) -> dict[str, bytes]:
    """A project tree without the records an attach rewrites (they carry the new uid)."""
    return {path: content for path, content in tree(root).items()
            if path not in (*model.EXPORTED_NAMES, model.LOCK_FILE) and not path.endswith(f"/{model.JOB_FILE}")}


def _no_orphans(db: Any) -> None:
    uids = {doc["uid"] for doc in db.projects.find({})}
    assert {doc["project_uid"] for doc in db.workspaces.find({})} <= uids
    assert {doc["project_uid"] for doc in db.jobs.find({})} <= uids
    assert len(uids) == db.projects.count_documents({}), "a uid appears twice"


@pytest.mark.state_store
def test_alternative_b_moves_users_first_then_every_project_with_a_uid_map(facility, monkeypatch):
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    before = {project.uid: {"jobs": [_without(job, "project_uid") for job in old_db.jobs.find({"project_uid":
                                                                                               project.uid})],
                            "files": _data(project.project_dir)}
              for project in old}
    plan = json.loads(site.cli("plan", "--format", "json").out)
    kinds = [(action["address"], action["kind"]) for action in plan["actions"]]
    assert kinds[0] == ("user:new/grace@example.org", "create_user")
    assert kinds[1:4] == [("migration:new/P1", "migrate_detach"), ("migration:new/P1", "migrate_copy"),
                          ("migration:new/P1", "migrate_attach")]
    assert plan["actions"][0]["id"] in plan["actions"][1]["depends_on"]
    [mapping] = [note["message"] for note in plan["notes"] if note["address"] == "instance:new"]
    assert "P1 -> P2" in mapping and "P2 -> P3" in mapping and "P3 -> P4" in mapping
    assert str(root / "new-storage") in mapping

    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    assert new_db.users.find_one({"emails.address": "grace@example.org"}) is not None
    for project in old:
        new_uid = f"P{int(project.uid[1:]) + 1}"
        document = new_db.projects.find_one({"uid": new_uid})
        assert document["imported_from"] == {"instance_id": "id-old", "uid": project.uid}
        path = root / "new-storage" / project.project_dir.name
        assert document["project_dir"] == str(path) and not document["detached"]
        assert model.read_lock(path) == "id-new"
        assert old_db.projects.find_one({"uid": project.uid})["detached"]
        source_owner = old_db.users.find_one({"_id": old_db.projects.find_one({"uid": project.uid})["owner_user_id"]})
        assert document["owner_user_id"] == f"new-{source_owner['_id']}", "owners are mapped by email"
        assert model.read_records(path).project["owner_user_id"] == document["owner_user_id"]
        assert [_without(job, "project_uid") for job in new_db.jobs.find({"project_uid": new_uid})] == \
            before[project.uid]["jobs"]
        sessions = [w for w in new_db.workspaces.find({"project_uid": new_uid}) if w.get("session_uid")]
        assert sessions and all(w["session_dir"].startswith(f"{path}/") for w in sessions)
        assert _data(path) == before[project.uid]["files"]
    _no_orphans(new_db)
    assert site.cli("plan", "--detailed-exitcode").code == 0

    report = site.cli("instances", "migration")
    assert report.code == 0 and "3 of 3 project(s) moved." in report.out, report.out + report.err
    assert "old/P1 -> new/P2" in report.out


def test_kill_9_in_the_middle_of_a_migration_then_rerun_converges(facility, monkeypatch):
    site, old_db, new_db, old, root = facility
    big = old[2].project_dir / "J2" / "big"
    big.mkdir()
    for index in range(3000):  # the last project's copy takes a while: the kill lands before it ends
        (big / f"particle_{index:05d}.mrc").write_bytes(b"x" * 4096)
    env = {"GRACE_PW": "a long enough password"}
    process = popen_cli(site.args("apply", "--auto-approve"), env=env)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if new_db.projects.count_documents({"imported_from.instance_id": "id-old"}) >= 1:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the migration finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    time.sleep(1)  # rsync learns (PR_SET_PDEATHSIG) that its parent died

    monkeypatch.setenv("GRACE_PW", env["GRACE_PW"])
    again = site.run("apply", "--auto-approve", env=env)
    assert again.code == 0, again.out + again.err
    imported = sorted(doc["imported_from"]["uid"] for doc in new_db.projects.find({"imported_from": {"$exists": 1}}))
    assert imported == ["P1", "P2", "P3"], "every project arrived exactly once"
    _no_orphans(new_db)
    moved = root / "new-storage" / old[2].project_dir.name / "J2" / "big"
    assert len(list(moved.iterdir())) == 3000
    store = StateStore(site.state_url)
    with store.session() as session:
        rows = list(session.exec(select(MigratedProject)))
    store.dispose()
    assert sorted((row.source_uid, row.new_uid) for row in rows if row.attached_at) == [
        ("P1", "P2"), ("P2", "P3"), ("P3", "P4")]
    assert site.cli("plan", "--detailed-exitcode").code == 0



# Run the CLI, and stop it dead (as kill -9 would, no handler runs) at the moment the first
# attach has exported the new workspaces into the new directory and not yet its jobs: the
# exported records there are half the source's (P1) and half the new project's (P2).
KILLED_MID_EXPORT = """
import os, sys
from pathlib import Path
from reconciler.providers.cryosparc import model
written = model.atomic_write_text
def write(path, *args, **kwargs):
    if Path(path).name == model.JOB_FILE and "new-storage" in str(path):
        os._exit(137)
    return written(path, *args, **kwargs)
model.atomic_write_text = write
from reconciler.cli.main import main
main(sys.argv[1:])
"""


def test_an_attach_killed_half_way_through_its_export_is_redone_from_the_mixed_records(facility, monkeypatch):
    """The kill of the test above lands anywhere; this one lands at the worst place for the
    records, deterministically: the rerun must attach P1 as P2 from records half rewritten."""
    site, old_db, new_db, old, root = facility
    env = {**os.environ, "GRACE_PW": "a long enough password", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_EXPORT, *site.args("apply", "--auto-approve")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == 137, killed.stdout + killed.stderr
    directory = root / "new-storage" / old[0].project_dir.name
    mixed = model.read_records(directory)
    assert mixed.project["uid"] == "P1" and {item["project_uid"] for item in mixed.workspaces} == {"P2"}
    assert {job["project_uid"] for job in mixed.jobs} == {"P1"}
    assert new_db.projects.find_one({"uid": "P2"})[model.ATTACHING]

    monkeypatch.setenv("GRACE_PW", env["GRACE_PW"])
    again = site.run("apply", "--auto-approve", env={"GRACE_PW": env["GRACE_PW"]})
    assert again.code == 0, again.out + again.err
    records = model.read_records(directory)
    assert {item["project_uid"] for item in [*records.workspaces, *records.jobs]} == {"P2"}
    assert [_without(job, "project_uid") for job in new_db.jobs.find({"project_uid": "P2"})] == \
        [_without(job, "project_uid") for job in old_db.jobs.find({"project_uid": "P1"})]
    sessions = [w for w in new_db.workspaces.find({"project_uid": "P2"}) if w.get("session_uid")]
    assert sessions and all(w["session_dir"].startswith(f"{directory}/") for w in sessions)
    imported = sorted(doc["imported_from"]["uid"] for doc in new_db.projects.find({"imported_from": {"$exists": 1}}))
    assert imported == ["P1", "P2", "P3"], "every project arrived exactly once"
    _no_orphans(new_db)
    assert site.cli("plan", "--detailed-exitcode").code == 0

@pytest.mark.state_store
def test_merge_into_an_instance_with_projects_and_users(facility, monkeypatch):
    """oSPARC's option 3 applied to CryoSPARC: users matched by email (conflicts listed, the
    target's kept), source-only users and lanes carried over first, every project attached
    under the next free uids with its owner mapped, integrity checked after each attach."""
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    bcrypt_hash = "$2b$10$abcdefghijklmnopqrstuuJkF3zq6s3Gk0pQ1m6m8bX0oJ3y9dW2e"
    old_db.users.insert_one({"_id": "user-zoe", "emails": [{"address": "Zoe@Example.org", "verified": True}],
                             "name": "Zoe Zed", "role": "user", "services": {"password": {"bcrypt": bcrypt_hash}}})
    old_db.projects.update_one({"uid": "P2"}, {"$set": {"owner_user_id": "user-zoe"}})
    model.write_records(old[1].project_dir, model.Records(
        {k: v for k, v in old_db.projects.find_one({"uid": "P2"}).items() if k != "_id"},
        [{k: v for k, v in w.items() if k != "_id"} for w in old_db.workspaces.find({"project_uid": "P2"})],
        [{k: v for k, v in j.items() if k != "_id"} for j in old_db.jobs.find({"project_uid": "P2"})]))
    new_db.users.update_one({"emails.address": "alice@example.org"}, {"$set": {"name": "Alice L."}})
    old_db.sched_config.update_one({"_id": "lanes"}, {"$push": {"lanes": {"name": "gpus", "type": "node"}}})
    old_db.sched_config.update_one({"_id": "targets"}, {"$push": {"targets": {
        "name": "gpu9", "hostname": "gpu9", "lane": "gpus", "type": "node", "ssh_str": "cs@gpu9",
        "worker_bin_path": "/opt/w/bin/cryosparcw"}}}, upsert=True)
    projects_before = new_db.projects.count_documents({})

    plan = json.loads(site.cli("plan", "--format", "json").out)
    kinds = [(action["address"], action["kind"]) for action in plan["actions"]]
    assert ("user:new/zoe@example.org", "merge_user") in kinds and ("lane:new/gpus", "merge_lane") in kinds
    merge = next(action["id"] for action in plan["actions"] if action["kind"] == "merge_user")
    first_detach = next(action for action in plan["actions"] if action["kind"] == "migrate_detach")
    assert merge in first_detach["depends_on"], "users are in place before any project moves"
    notes = " ".join(note["message"] for note in plan["notes"])
    assert "alice@example.org (here: Alice L." in notes

    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    zoe = new_db.users.find_one({"emails.address": "Zoe@Example.org"})
    assert zoe["services"]["password"]["bcrypt"] == bcrypt_hash and zoe["_id"] != "user-zoe"
    assert new_db.users.find_one({"emails.address": "alice@example.org"})["name"] == "Alice L."
    moved = new_db.projects.find_one({"imported_from.uid": "P2"})
    assert moved["owner_user_id"] == zoe["_id"]
    assert new_db.projects.count_documents({}) == projects_before + 3
    assert [lane["name"] for lane in new_db.sched_config.find_one({"_id": "lanes"})["lanes"]].count("gpus") == 1
    assert any(t["name"] == "gpu9" for t in new_db.sched_config.find_one({"_id": "targets"})["targets"])
    users = {user["_id"] for user in new_db.users.find({})}
    assert {doc["owner_user_id"] for doc in new_db.projects.find({})} <= users, "no dangling owner"
    _no_orphans(new_db)
    again = json.loads(site.cli("plan", "--format", "json").out)
    assert again["actions"] == [] and again["errors"] == []


def test_a_failed_integrity_check_rolls_that_attach_back_and_names_what_failed(facility, monkeypatch):
    """A project whose owner has no email on the source cannot be mapped to a user of the target:
    attached, its owner_user_id would dangle. The check after the attach finds it, that stage is
    rolled back (documents gone, the copy's records and lock as before), the others stand, and once
    the owner is fixed on the source the next run attaches it."""
    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    old_db.users.insert_one({"_id": "user-ghost", "name": "Ghost", "emails": []})
    old_db.projects.update_one({"uid": "P2"}, {"$set": {"owner_user_id": "user-ghost"}})
    projects_before = new_db.projects.count_documents({})
    failed = site.cli("apply", "--auto-approve")
    text = failed.out + failed.err
    assert failed.code == 1, text
    assert "integrity check after attaching P2 as P3 on new failed" in text, text
    assert "dangling projects P3: owner_user_id user-ghost" in text and "the attach was rolled back" in text
    assert new_db.projects.find_one({"imported_from.uid": "P2"}) is None
    assert new_db.workspaces.count_documents({"project_uid": "P3"}) == 0 == new_db.jobs.count_documents(
        {"project_uid": "P3"})
    assert new_db.projects.count_documents({}) == projects_before + 2, "the other projects' stages stand"
    copy = root / "new-storage" / old[1].project_dir.name
    assert model.read_records(copy).project["uid"] == "P2" and model.read_lock(copy) is None
    store = StateStore(site.state_url)
    with store.session() as session:
        rows = {row.source_uid: row for row in session.exec(select(MigratedProject))}
    store.dispose()
    assert rows["P2"].copied_at is not None and rows["P2"].attached_at is None
    assert rows["P1"].attached_at is not None and rows["P3"].attached_at is not None

    old_db.projects.update_one({"uid": "P2"}, {"$set": {"owner_user_id": "user-alice"}})
    again = site.cli("apply", "--auto-approve")
    assert again.code == 0, again.out + again.err
    moved = new_db.projects.find_one({"imported_from.uid": "P2"})
    assert moved["owner_user_id"] == new_db.users.find_one({"emails.address": "alice@example.org"})["_id"]
    _no_orphans(new_db)
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_a_failed_users_stage_check_is_an_error_and_no_project_moves_before_it(facility, monkeypatch):
    """The id the carried-over user would get is already another account's on the target (a
    document with no email): the insert does not happen, the users stage's check finds the email
    missing, fails naming it, and the projects, which wait for the users stage, stay where they are."""
    from reconciler.providers.cryosparc import accounts

    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    old_db.users.insert_one({"_id": "user-zoe", "emails": [{"address": "zoe@example.org"}], "name": "Zoe Zed"})
    taken = accounts.meteor_id("id-new\0zoe@example.org")
    new_db.users.insert_one({"_id": taken, "name": "someone without an email"})
    users_before = new_db.users.count_documents({})
    failed = site.cli("apply", "--auto-approve")
    text = failed.out + failed.err
    assert failed.code == 1, text
    assert "integrity check after carrying zoe@example.org over to new failed" in text, text
    assert "zoe@example.org is not found on new as the user just carried over" in text
    assert f"its id {taken} is another account's" in text
    assert new_db.users.count_documents({}) == users_before + 1, "only the declared grace was created"
    assert new_db.users.find_one({"emails.address": "grace@example.org"}) is not None
    assert new_db.users.find_one({"_id": taken})["name"] == "someone without an email", "the other account stays"
    assert new_db.projects.count_documents({"imported_from": {"$exists": True}}) == 0
    assert not any(doc.get("detached") for doc in old_db.projects.find({})), "no project left its instance"


def test_a_reference_that_dangled_before_the_merge_is_not_blamed_on_it(facility, monkeypatch):
    from reconciler.providers.cryosparc import integrity

    site, old_db, new_db, old, root = facility
    monkeypatch.setenv("GRACE_PW", "a long enough password")
    new_db.jobs.insert_one({"uid": "J1", "project_uid": "P99", "status": "completed"})  # the target's own leftover
    assert integrity.dangling(new_db) == ["1 jobs: project_uid P99"]
    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    assert new_db.projects.count_documents({"imported_from": {"$exists": True}}) == 3
    assert integrity.dangling(new_db) == ["1 jobs: project_uid P99"], "the merge added no dangling reference"

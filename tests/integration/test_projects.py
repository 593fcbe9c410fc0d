"""Projects on instances end to end: generated CryoSPARC-shaped instances in a real MongoDB
wire-protocol server (mongod, or nx-27017 where none exists), real directories, the real
rsync, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from reconciler.kinds.projects.generator import GeneratedProject, make_instance
from reconciler.providers.cryosparc import model
from reconciler.state import lock
from reconciler.state.store import StateStore
from tests.conftest import popen_cli
from tests.integration.conftest import tree

RECORDS = {model.PROJECT_FILE, model.LOCK_FILE}


@dataclass
class Facility:
    """Two instances, "old" (P1..P3) and "new" (P1, P2), and a config for them."""

    site: Any
    mongo: Any
    client: Any
    old_db: str
    new_db: str
    old: list[GeneratedProject]
    new: list[GeneratedProject]

    def db(self, instance: str) -> Any:
        return self.client[self.old_db if instance == "old" else self.new_db]

    def configure(self, projects: str, backup: str = "") -> None:
        self.site.write(
            f'[databases.cs-old]\nuri = "{self.mongo.uri}"\ndatabase = "{self.old_db}"\n{backup}\n'
            f'[databases.cs-new]\nuri = "{self.mongo.uri}"\ndatabase = "{self.new_db}"\n\n'
            '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
            '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\n\n' + projects)

    def documents(self, instance: str, uid: str) -> dict[str, Any]:
        """A project's documents without ids (for before/after comparisons)."""
        db = self.db(instance)

        def plain(items: Any) -> list[dict[str, Any]]:
            return sorted(({k: v for k, v in item.items() if k != "_id"} for item in items), key=lambda d: d["uid"])

        project = db.projects.find_one({"uid": uid}, {"_id": 0})
        return {"project": project, "workspaces": plain(db.workspaces.find({"project_uid": uid})),
                "jobs": plain(db.jobs.find({"project_uid": uid}))}


@pytest.fixture
def facility(site, mongo, client) -> Facility:
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = f"csold_{tag}", f"csnew_{tag}"
    old = make_instance(client[old_db], site.root / "old", "id-old", projects=3, jobs=4)
    new = make_instance(client[new_db], site.root / "new", "id-new", projects=2, jobs=3, seed=2)
    yield Facility(site, mongo, client, old_db, new_db, old, new)
    client.drop_database(old_db)
    client.drop_database(new_db)


def data_files(root: Path) -> dict[str, bytes]:
    """A project tree without the files an operation rewrites (project.json, cs.lock)."""
    return {path: content for path, content in tree(root).items() if path not in RECORDS}


def without(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in keys}


@pytest.mark.state_store
def test_move_within_an_instance_archives_copies_repoints_and_removes_only_with_allow_destroy(facility):
    project = facility.old[0]
    before_tree = data_files(project.project_dir)
    before_docs = facility.documents("old", "P1")
    target = facility.site.root / "storage2" / "CS-apo"
    facility.configure(f'[projects.apo]\nuid = "P1"\ninstance = "old"\npath = "{target}"\n')

    plan = facility.site.cli("plan")
    kinds = [line.split(":")[0].strip("+- ") for line in plan.out.splitlines() if line.startswith("  ") and ": " in line
             and line.lstrip()[0] in "+-"]
    assert kinds == ["archive", "copy", "update_path", "unarchive", "remove_old (destructive)"], plan.out

    first = facility.site.cli("apply", "--auto-approve")
    assert first.code == 0, first.err
    assert project.project_dir.exists(), "the old directory is kept without --allow-destroy"
    assert without(data_files(target), model.WORKSPACES_FILE) == without(before_tree, model.WORKSPACES_FILE)
    after = facility.documents("old", "P1")
    assert after["project"]["project_dir"] == str(target) and not after["project"]["archived"]
    assert without(after["project"], "project_dir", "archived") == without(before_docs["project"], "project_dir",
                                                                            "archived")
    assert after["jobs"] == before_docs["jobs"]
    # the Live sessions' recorded directories moved with the project (never left pointing at the old copy)
    moved_sessions = [dict(w, session_dir=str(target / Path(w["session_dir"]).relative_to(project.project_dir)))
                      if "session_dir" in w else w for w in before_docs["workspaces"]]
    assert any("session_dir" in w for w in before_docs["workspaces"])
    assert after["workspaces"] == moved_sessions
    assert [w.get("session_dir") for w in model.read_records(target).workspaces] == [
        w.get("session_dir") for w in moved_sessions]
    exported = model.read_records(target)
    assert exported.project["project_dir"] == str(target) and not exported.project["archived"]
    assert model.read_lock(target) == "id-old"

    pending = facility.site.cli("plan", "--detailed-exitcode")
    assert pending.code == 2 and "remove_old" in pending.out and str(project.project_dir) in pending.out
    second = facility.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert second.code == 0, second.err
    assert not project.project_dir.exists()
    assert facility.site.cli("plan", "--detailed-exitcode").code == 0


def test_migration_onto_a_taken_uid_gets_a_new_uid_and_rewrites_every_reference(facility):
    source = facility.old[1]  # P2 on old; new already has P1 and P2
    before_tree = data_files(source.project_dir)
    before = facility.documents("old", "P2")
    target = facility.site.root / "new" / "CS-bgal-moved"
    facility.configure(f'[projects.bgal]\nuid = "P2"\nfrom = "old"\ninstance = "new"\npath = "{target}"\n')

    plan = facility.site.cli("plan")
    assert "attach /" in plan.out and "as P3 (P2 is taken there)" in plan.out, plan.out
    applied = facility.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert applied.code == 0, applied.err

    moved = facility.documents("new", "P3")
    assert moved["project"]["imported_from"] == {"instance_id": "id-old", "uid": "P2"}
    assert moved["project"]["project_dir"] == str(target) and not moved["project"]["detached"]
    assert [without(job, "project_uid") for job in moved["jobs"]] == [without(job, "project_uid")
                                                                      for job in before["jobs"]]
    assert {job["project_uid"] for job in moved["jobs"]} == {"P3"}
    assert [w["project_uid"] for w in moved["workspaces"]] == ["P3"] * len(before["workspaces"])
    assert facility.documents("new", "P2")["project"]["title"] == facility.new[1].title, "P2 on new untouched"
    left = facility.documents("old", "P2")
    assert left["project"]["detached"] and left["jobs"] == before["jobs"], "the source document stays, detached"

    assert not source.project_dir.exists()
    copied = data_files(target)
    assert {path for path in copied if not path.endswith("job.json") and path not in model.EXPORTED_NAMES} == {
        path for path in before_tree if not path.endswith("job.json") and path not in model.EXPORTED_NAMES}
    assert all(copied[path] == before_tree[path] for path in copied if not path.endswith(".json"))
    assert model.read_lock(target) == "id-new"
    assert model.read_records(target).project["uid"] == "P3"

    listing = facility.site.cli("projects", "list", "--json")
    rows = {(row["instance"], row["uid"]): row for row in json.loads(listing.out)}
    assert rows[("new", "P3")]["imported_from"]["uid"] == "P2" and rows[("new", "P3")]["in_sync"]
    assert rows[("old", "P2")]["state"] == "detached"
    assert facility.site.cli("plan", "--detailed-exitcode").code == 0


def test_archive_unarchive_round_trip_leaves_the_project_as_it_was(facility):
    before = facility.documents("old", "P3")
    before_tree = data_files(facility.old[2].project_dir)
    path = facility.old[2].project_dir
    facility.configure(f'[projects.p3]\nuid = "P3"\ninstance = "old"\npath = "{path}"\nstate = "archived"\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    assert facility.documents("old", "P3")["project"]["archived"]
    assert model.read_records(path).project["archived"] is True
    facility.configure(f'[projects.p3]\nuid = "P3"\ninstance = "old"\npath = "{path}"\nstate = "active"\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    after = facility.documents("old", "P3")
    assert without(after["project"], "archived") == without(before["project"], "archived")
    assert not after["project"]["archived"] and after["jobs"] == before["jobs"]
    assert data_files(path) == before_tree


def test_detach_then_attach_the_detached_directory_again(facility):
    path = facility.old[0].project_dir
    facility.configure(f'[projects.p1]\nuid = "P1"\ninstance = "old"\npath = "{path}"\nstate = "detached"\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    assert facility.documents("old", "P1")["project"]["detached"]
    assert model.read_lock(path) is None
    facility.configure(f'[projects.p1]\nuid = "P1"\ninstance = "old"\npath = "{path}"\nstate = "active"\n')
    plan = facility.site.cli("plan")
    assert "attach" in plan.out and "again as P1" in plan.out
    assert facility.site.cli("apply", "--auto-approve").code == 0
    docs = facility.documents("old", "P1")
    assert not docs["project"]["detached"] and len(docs["jobs"]) == 4
    assert facility.db("old").projects.count_documents({"uid": "P1"}) == 1
    assert model.read_lock(path) == "id-old"


def test_a_foreign_lock_blocks_attach_unless_forced(facility):
    path = facility.old[0].project_dir
    facility.db("old").projects.update_one({"uid": "P1"}, {"$set": {"detached": True}})
    model.write_lock(path, "id-of-a-third-instance")
    facility.configure(f'[projects.p1]\nuid = "P1"\ninstance = "old"\npath = "{path}"\n')
    refused = facility.site.cli("apply", "--auto-approve")
    assert refused.code == 1 and "cs.lock belongs to instance id-of-a-third-instance" in refused.err + refused.out
    assert facility.documents("old", "P1")["project"]["detached"]
    facility.configure(f'[projects.p1]\nuid = "P1"\ninstance = "old"\npath = "{path}"\nforce = true\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    assert model.read_lock(path) == "id-old"


def test_running_jobs_make_a_move_wait(site, mongo, client):
    tag = uuid.uuid4().hex[:8]
    made = make_instance(client[f"busy_{tag}"], site.root / "cs", "id-old", projects=2, jobs=4, running_jobs=1)
    site.write(f'[databases.cs-old]\nuri = "{mongo.uri}"\ndatabase = "busy_{tag}"\n\n'
               '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
               f'[projects.busy]\nuid = "P1"\ninstance = "old"\npath = "{site.root / "elsewhere"}"\n\n'
               f'[projects.idle]\nuid = "P2"\ninstance = "old"\npath = "{made[1].project_dir}"\nstate = "archived"\n')
    plan = site.cli("plan")
    assert "waiting: jobs J4 of P1 on old are queued or running" in plan.out + plan.err
    assert "project:busy" not in [line.strip("# ").strip() for line in plan.out.splitlines() if line.startswith("  #")]
    assert site.cli("apply", "--auto-approve").code == 0
    assert client[f"busy_{tag}"].projects.find_one({"uid": "P2"})["archived"]
    assert client[f"busy_{tag}"].projects.find_one({"uid": "P1"})["project_dir"] == str(made[0].project_dir)
    client.drop_database(f"busy_{tag}")


def test_bad_projects_fail_alone(facility):
    p1, p2, p3 = facility.old
    (p2.project_dir / "J2" / "job.json").write_text("{ corrupt")
    facility.db("old").projects.update_one({"uid": "P3"}, {"$set": {"project_dir": str(facility.site.root / "gone")}})
    facility.configure(
        f'[projects.good]\nuid = "P1"\ninstance = "old"\npath = "{p1.project_dir}"\nstate = "archived"\n\n'
        f'[projects.corrupt]\nuid = "P2"\ninstance = "old"\npath = "{p2.project_dir}"\nstate = "archived"\n\n'
        f'[projects.missing]\nuid = "P3"\ninstance = "old"\npath = "{facility.site.root / "p3-new"}"\n\n'
        f'[projects.unknown]\nuid = "P9"\ninstance = "old"\npath = "{facility.site.root / "p9"}"\n')
    result = facility.site.cli("apply", "--auto-approve")
    text = result.out + result.err
    assert result.code == 1
    assert "project:corrupt" in text and "J2/job.json is not valid JSON" in text
    assert "project:missing" in text and "neither the project directory" in text
    assert "project:unknown" in text and "no project P9 on instance old" in text
    assert facility.documents("old", "P1")["project"]["archived"], "the good project proceeded"
    assert not facility.documents("old", "P2")["project"]["archived"]


def test_config_mistakes_name_file_and_line(facility):
    facility.configure('[projects.c]\nuid = "12"\ninstance = "old"\npath = "/data/c"\n')
    result = facility.site.cli("validate")
    assert result.code == 1 and "reconciler.toml:" in result.err and "'12' is not a project uid" in result.err
    facility.configure(
        '[projects.a]\nuid = "P1"\ninstance = "old"\npath = "/data/x"\n\n'
        '[projects.b]\nuid = "P1"\ninstance = "old"\npath = "/data/x/inner"\n\n'
        '[projects.d]\nuid = "P2"\ninstance = "nowhere"\npath = "/data/d"\n')
    result = facility.site.cli("validate")
    assert result.code == 1
    lines = result.err.splitlines()
    assert any("reconciler.toml:" in line and "declares P1 on old again" in line for line in lines), result.err
    assert any("inside the directory of [projects.a]" in line for line in lines)
    assert any('instance = "nowhere" is not an [instances.*] entry' in line for line in lines)


def test_kill_9_during_a_migration_then_rerun_converges_with_nothing_lost(facility):
    source = facility.old[0]
    big = source.project_dir / "J3" / "big"
    big.mkdir()
    for index in range(4000):  # many small files keep rsync busy without flooding the disk
        (big / f"particle_{index:05d}.mrc").write_bytes(os.urandom(4096))
    before_tree = {path: len(content) for path, content in data_files(source.project_dir).items()}
    before = facility.documents("old", "P1")
    target = facility.site.root / "new" / "CS-apo"
    facility.configure(f'[projects.apo]\nuid = "P1"\nfrom = "old"\ninstance = "new"\npath = "{target}"\n')
    process = popen_cli(facility.site.args("apply", "--auto-approve", "--allow-destroy"))
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if (target / "J3" / "big").is_dir() and len(os.listdir(target / "J3" / "big")) >= 50:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the migration finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert source.project_dir.exists(), "nothing removed before the copy was verified"
    assert facility.documents("old", "P1")["project"]["detached"]
    assert facility.db("new").projects.count_documents({"imported_from.uid": "P1"}) == 0

    time.sleep(1)  # rsync is told (PR_SET_PDEATHSIG) that its parent died; give it a moment to stop
    store = StateStore(facility.site.state_url)
    stale = lock.holder(store)
    store.dispose()
    assert stale is not None and stale.pid == process.pid
    again = facility.site.run("apply", "--auto-approve", "--allow-destroy")  # the lock died with its process
    assert again.code == 0, again.err + again.out
    assert not source.project_dir.exists()
    sizes = {path: len(content) for path, content in data_files(target).items()}
    # workspaces.json differs by the sessions' directories, which moved with the project
    assert without(sizes, model.WORKSPACES_FILE) == without(before_tree, model.WORKSPACES_FILE)
    moved = facility.documents("new", "P3")
    assert all(w["session_dir"].startswith(f"{target}/") for w in moved["workspaces"] if "session_dir" in w)
    assert [without(job, "project_uid") for job in moved["jobs"]] == [without(job, "project_uid")
                                                                      for job in before["jobs"]]
    assert facility.site.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.state_store
def test_an_attach_interrupted_half_way_is_redone_not_duplicated(facility):
    # The state a kill -9 between the attach's inserts leaves: the project document with the
    # in-progress mark and some of its jobs (made here directly: the window is microseconds wide).
    source = facility.old[2]
    facility.configure(f'[projects.p3]\nuid = "P3"\nfrom = "old"\ninstance = "new"\npath = "{source.project_dir}"\n')
    detach_only = facility.site.cli("apply", "--auto-approve", "--target", "project:p3")
    assert detach_only.code == 0
    facility.db("new").projects.delete_many({"imported_from.uid": "P3"})
    facility.db("new").jobs.delete_many({"project_uid": "P3"})
    facility.db("new").workspaces.delete_many({"project_uid": "P3"})
    facility.db("old").projects.update_one({"uid": "P3"}, {"$set": {"detached": True}})
    facility.db("new").projects.insert_one({"uid": "P3", "uid_num": 3, "title": source.title, "detached": True,
                                            "project_dir": str(source.project_dir), model.ATTACHING: True,
                                            "imported_from": {"instance_id": "id-old", "uid": "P3"}})
    facility.db("new").jobs.insert_one({"uid": "J1", "project_uid": "P3", "status": "completed"})
    plan = facility.site.cli("plan")
    assert "as P3" in plan.out, plan.out
    assert facility.site.cli("apply", "--auto-approve").code == 0
    assert facility.db("new").projects.count_documents({"uid": "P3"}) == 1
    assert facility.db("new").jobs.count_documents({"project_uid": "P3"}) == 4
    assert model.ATTACHING not in facility.db("new").projects.find_one({"uid": "P3"})


def test_archive_runs_before_the_backup_and_restore_refuses_to_roll_projects_back(facility):
    (facility.site.root / "backups").mkdir()
    backup = '[databases.cs-old.backup]\nto = "backups"\nevery = "1h"\nmethod = "python"\n'
    target = facility.site.root / "storage2" / "CS-apo"
    facility.configure(f'[projects.apo]\nuid = "P1"\ninstance = "old"\npath = "{target}"\n', backup=backup)
    applied = facility.site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.err
    order = [line for line in applied.err.splitlines() if ": started" in line]
    names = [line.split(" INFO ")[1].split(" ")[0] for line in order]
    assert names.index("archive") < names.index("backup") < names.index("unarchive"), names
    archive = next((facility.site.root / "backups").glob("*.archive.gz"))
    restored_db = f"restored_{uuid.uuid4().hex[:6]}"
    # The backup holds P1 archived at its old path; P2 and P3 unchanged. Now P3's records change:
    time.sleep(1.1)
    os.utime(facility.old[2].project_dir / "J1" / "job.json")
    refused = facility.site.cli("backups", "restore", str(archive), "--uri", facility.mongo.uri,
                                "--database", restored_db)
    assert refused.code == 1
    assert "refusing to restore" in refused.err and "P3 (" in refused.err and "--force-rollback" in refused.err
    assert restored_db not in facility.client.list_database_names()
    forced = facility.site.cli("backups", "restore", str(archive), "--uri", facility.mongo.uri,
                               "--database", restored_db, "--force-rollback")
    assert forced.code == 0, forced.err
    restored = facility.client[restored_db].projects.find_one({"uid": "P1"})
    assert restored["archived"], "the backup was taken after the archive"
    facility.client.drop_database(restored_db)


def test_dev_make_instance_builds_a_cryosparc_shaped_instance(site, mongo, client):
    database = f"dev_{uuid.uuid4().hex[:8]}"
    result = site.cli("dev", "make-instance", "--uri", mongo.uri, "--database", database, "--root",
                      str(site.root / "cs"), "--instance-id", "demo", "--projects", "2", "--sessions", "2")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].startswith("P1  ")
    db = client[database]
    assert db.projects.count_documents({}) == 2 and db.users.count_documents({}) == 3
    live = db.workspaces.find_one({"project_uid": "P2", "session_uid": "S2"})
    assert live["workspace_type"] == "live" and set(live["data_management"]) == {
        "raw", "micrographs", "thumbnails", "particles", "metadata"}
    project_dir = Path(db.projects.find_one({"uid": "P1"})["project_dir"])
    records = model.read_records(project_dir)
    assert [job["uid"] for job in records.jobs] == ["J1", "J2", "J3", "J4", "J5", "J6"]
    assert records.jobs[1]["parents"] == ["J1"] and model.read_lock(project_dir) == "demo"
    assert (project_dir / "S1" / "import_movies").is_dir() and (project_dir / "S1" / "exposures.bson").is_file()
    again = site.cli("dev", "make-instance", "--uri", mongo.uri, "--database", database, "--root",
                     str(site.root / "cs"), "--instance-id", "demo", "--projects", "1")
    assert again.code == 1 and "already has P1" in again.err and "--first-uid" in again.err
    client.drop_database(database)


def test_export_temporaries_left_by_a_killed_run_are_removed_by_the_next_export(facility):
    path = facility.old[2].project_dir
    left = [path / ".project.json.k1ll3d.tmp", path / "J1" / ".job.json.abc123.tmp",
            path / ".workspaces.json.zz.tmp"]
    for item in left:
        item.write_text("half a record")
    kept = path / "J1" / ".my-own.tmp"  # not ours: never touched
    kept.write_text("user data")
    facility.configure("")
    bundle = facility.site.root / "P3.tar"
    assert facility.site.cli("projects", "export", "P3", "--instance", "old", "-o", str(bundle)).code == 0
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert not any(name.endswith("k1ll3d.tmp") or name.endswith("abc123.tmp") for name in names)
    facility.configure(f'[projects.p3]\nuid = "P3"\ninstance = "old"\npath = "{path}"\nstate = "archived"\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    assert not any(item.exists() for item in left)
    assert kept.read_text() == "user data"


@pytest.mark.state_store
def test_a_removal_that_happened_is_reported_as_done_even_if_the_copy_record_went_meanwhile(facility, monkeypatch):
    """remove_old once removed the old directory, then failed (AttributeError) when the copy's
    row was gone by then, so a removal that happened was reported as failed."""
    import shutil as real_shutil

    from reconciler.kinds.projects import kind as projects_kind
    from reconciler.kinds.projects.tables import ProjectCopy

    project = facility.old[0]
    target = facility.site.root / "storage2" / "CS-apo"
    facility.configure(f'[projects.apo]\nuid = "P1"\ninstance = "old"\npath = "{target}"\n')
    assert facility.site.cli("apply", "--auto-approve").code == 0
    original = real_shutil.rmtree

    def rmtree_then_forget(path, *args, **kwargs):
        original(path, *args, **kwargs)
        store = StateStore(facility.site.state_url)
        with store.session() as session:
            for row in session.exec(select(ProjectCopy)).all():
                session.delete(row)
            session.commit()
        store.dispose()

    monkeypatch.setattr(projects_kind.shutil, "rmtree", rmtree_then_forget)
    removed = facility.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert removed.code == 0, removed.err
    assert "removed " in removed.err and "files" in removed.err
    assert not project.project_dir.exists()

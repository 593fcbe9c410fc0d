"""Issue #19's "Done when", end to end: a generated facility (users, two lanes whose targets answer
over a real sshd, several projects with Live sessions) moves by alternative A ("database") into a
fresh instance, by alternative B ("attach") into another fresh instance, and merges into an
instance that already has projects and users; each from one config and one `reconcile`. Then
users, lanes, projects, sessions and uids compare as expected on the target, every lane keeps a
functional target, and the sessions kind deletes a datatype in the migrated project's new
directory, never in the old copy. Real MongoDB single-node replica set, real sshd, real CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc import accounts, scheduler
from reconciler.providers.cryosparc.datatypes import collect
from tests.integration.conftest import make_worker

PASSWORD = "a long enough password"


def _lanes(db: Any, ssh_str: str, worker: Path, lanes: dict[str, str]) -> None:
    """Replace the generated scheduler config with ``lanes`` (lane -> its one node target)."""
    db.sched_config.delete_many({})
    for lane, host in lanes.items():
        scheduler.put_lane(db, {"name": lane, "title": lane, "desc": None, "type": "node"})
        scheduler.put_target(db, scheduler.node_target(lane=lane, hostname=host, ssh_str=ssh_str,
                                                        worker_path=str(worker), ssd_path=None, ssd_quota_mb=None))


def _emails(db: Any) -> list[str]:
    return sorted(email for user in db.users.find({}) for email in accounts.emails_of(user))


def _micrographs(directory: Path) -> list[str]:
    return [item.path for item in collect(directory, "micrographs")]


@pytest.mark.parametrize("mode", ["database", "attach", "merge"])
def test_a_generated_facility_migrates_by_both_alternatives_and_merges(site, mongo_rs, sshd, tmp_path, monkeypatch,
                                                                      mode):
    import pymongo

    client: Any = pymongo.MongoClient(mongo_rs.uri)
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = client[f"fold_{tag}"], client[f"fnew_{tag}"]
    try:
        worker = make_worker(tmp_path)
        ssh_str = f"{sshd.user}@127.0.0.1"
        old = make_instance(old_db, tmp_path / "old-storage", "id-old", projects=3, jobs=3, sessions=1, movies=3)
        _lanes(old_db, ssh_str, worker, {"ws": "gpu1", "spare": "gpu2"})
        old_db.users.insert_one({"_id": "user-zoe", "emails": [{"address": "Zoe@Example.org", "verified": True}],
                                 "name": "Zoe Zed", "role": "user"})
        old_db.projects.update_one({"uid": "P3"}, {"$set": {"owner_user_id": "user-zoe"}})
        existing: list[str] = []
        if mode == "merge":  # the third instance is in use: its own projects, users (other ids) and lane
            made = make_instance(new_db, tmp_path / "new-existing", "id-new", projects=2, jobs=2, seed=2)
            existing = [project.uid for project in made]
            users = list(new_db.users.find({}))
            new_db.users.delete_many({})
            new_db.users.insert_many([{**user, "_id": f"new-{user['_id']}"} for user in users])
            for user in users:
                new_db.projects.update_many({"owner_user_id": user["_id"]},
                                            {"$set": {"owner_user_id": f"new-{user['_id']}"}})
            _lanes(new_db, ssh_str, worker, {"local": "gpu3"})
        source_emails, target_emails = _emails(old_db), _emails(new_db)
        source_files = {project.uid: _micrographs(project.project_dir / "S1") for project in old}
        assert all(source_files.values())

        new_storage = tmp_path / "new-storage"
        migration = "database" if mode == "database" else "attach"
        target = f'{{ hostname = "gpu1", ssh = "{ssh_str}", worker_path = "{worker}" }}'
        config = (f'{sshd.toml(port_option=True)}\n'
                  f'[databases.cs-old]\nuri = "{mongo_rs.uri}"\ndatabase = "{old_db.name}"\n\n'
                  f'[databases.cs-new]\nuri = "{mongo_rs.uri}"\ndatabase = "{new_db.name}"\n\n'
                  '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
                  '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\nmigrate_from = "old"\n'
                  f'migration = "{migration}"\n'
                  f'migrate_paths = {{ "{tmp_path / "old-storage"}" = "{new_storage}" }}\n\n'
                  '[users."grace@example.org"]\ninstances = ["new"]\nname = "Grace Hopper"\n'
                  'initial_password_env = "GRACE_PW"\n\n'
                  f'[lanes.ws]\ninstances = ["new"]\ntype = "node"\ntargets = [{target}]\n')
        site.write(config)
        monkeypatch.setenv("GRACE_PW", PASSWORD)

        done = site.cli("reconcile")
        assert done.code == 0, done.out + done.err

        # users: the source's and the target's, matched by email (once each), and the declared one
        assert _emails(new_db) == sorted({*source_emails, *target_emails, "grace@example.org"},
                                         key=lambda email: (email.lower(), email))
        assert len({email.lower() for email in _emails(new_db)}) == len(_emails(new_db))
        grace = new_db.users.find_one({"emails.address": "grace@example.org"})
        assert accounts.meteor_password_matches(PASSWORD, grace["services"]["password"]["bcrypt"])

        # uids: A keeps them; B attaches under the next free ones after what the target holds
        expected = {project.uid: project.uid if mode == "database" else f"P{len(existing) + index}"
                    for index, project in enumerate(old, start=1)}
        assert sorted(doc["uid"] for doc in new_db.projects.find({})) == sorted([*existing, *expected.values()])
        user_ids = {user["_id"] for user in new_db.users.find({})}
        for project in old:
            document = new_db.projects.find_one({"uid": expected[project.uid]})
            if mode != "database":
                assert document["imported_from"] == {"instance_id": "id-old", "uid": project.uid}
            path = new_storage / project.project_dir.name
            assert document["project_dir"] == str(path) and not document.get("archived")
            assert document["owner_user_id"] in user_ids, "no dangling owner"
            source_owner = old_db.users.find_one({"_id": old_db.projects.find_one({"uid": project.uid})
                                                  ["owner_user_id"]})
            target_owner = new_db.users.find_one({"_id": document["owner_user_id"]})
            assert {e.lower() for e in accounts.emails_of(source_owner)} == \
                {e.lower() for e in accounts.emails_of(target_owner)}, "owners are the same people"
            # sessions: their directories are inside the new project directory, with their files
            [session] = [w for w in new_db.workspaces.find({"project_uid": expected[project.uid]})
                         if w.get("session_uid")]
            assert session["session_dir"] == str(path / "S1")
            assert len(_micrographs(path / "S1")) == len(source_files[project.uid])
        uids = {doc["uid"] for doc in new_db.projects.find({})}
        assert {doc["project_uid"] for doc in new_db.workspaces.find({})} <= uids
        assert {doc["project_uid"] for doc in new_db.jobs.find({})} <= uids

        # lanes: the source's and the target's, each with a target whose worker answers over ssh
        lanes = {lane["name"] for lane in scheduler.lanes(new_db)}
        assert lanes == {"ws", "spare", *(["local"] if mode == "merge" else [])}
        for lane in lanes:
            targets = [item for item in scheduler.targets(new_db) if item["lane"] == lane]
            assert targets and all(Path(item["worker_bin_path"]).is_file() for item in targets), lane
        plan = json.loads(site.cli("plan", "--format", "json").out)
        assert plan["actions"] == [] and plan["errors"] == [] and plan["warnings"] == [], plan

        # the sessions kind acts on the migrated project's new directory, never on the old copy
        moved = old[0]
        site.write(config + f'\n[sessions."{expected[moved.uid]}/S1"]\ninstance = "new"\nmicrographs = "deleted"\n')
        deleted = site.cli("apply", "--auto-approve", "--allow-destroy")
        assert deleted.code == 0, deleted.out + deleted.err
        assert _micrographs(new_storage / moved.project_dir.name / "S1") == []
        assert _micrographs(moved.project_dir / "S1") == source_files[moved.uid], "the old copy is untouched"
        assert all(Path(path).exists() for path in source_files[moved.uid])
    finally:
        client.drop_database(old_db.name)
        client.drop_database(new_db.name)
        client.close()

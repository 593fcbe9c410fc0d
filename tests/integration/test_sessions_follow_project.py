"""Live session data follows its project: after an import, an attach or a move, a session's files
are found inside the project's current directory, and a deletion never reaches the copy another
instance (or the project's old directory) still holds. Real MongoDB server, real files, real CLI."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest

from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc.datatypes import collect


def _files(directory: Path, datatype: str) -> list[str]:
    return [item.path for item in collect(directory, datatype)]


@pytest.fixture
def two(site, mongo) -> Any:
    client = pymongo.MongoClient(mongo.uri)
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = f"sold_{tag}", f"snew_{tag}"
    old = make_instance(client[old_db], site.root / "old", "id-old", projects=1, jobs=2, sessions=1, movies=3)
    make_instance(client[new_db], site.root / "new", "id-new", projects=1, jobs=1, sessions=0, seed=5)
    base = (f'[databases.cs-old]\nuri = "{mongo.uri}"\ndatabase = "{old_db}"\n\n'
            f'[databases.cs-new]\nuri = "{mongo.uri}"\ndatabase = "{new_db}"\n\n'
            '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
            '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\nowner_user_id = "user-alice"\n')
    site.write(base)
    yield site, client[old_db], client[new_db], old[0].project_dir, base
    client.drop_database(old_db)
    client.drop_database(new_db)
    client.close()


def test_deleting_a_datatype_of_an_imported_project_never_touches_the_source_instance(two):
    site, old_db, new_db, source_dir, base = two
    source_micrographs = _files(source_dir / "S1", "micrographs")
    assert source_micrographs
    bundle = site.root / "P1.bundle.tar"
    assert site.cli("projects", "export", "P1", "--instance", "old", "-o", str(bundle)).code == 0
    destination = site.root / "new" / "imported"
    imported = site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination),
                        "--owner-fallback", "user-alice")
    assert imported.code == 0, imported.err
    uid = new_db.projects.find_one({"imported_from.uid": "P1"})["uid"]
    session = new_db.workspaces.find_one({"project_uid": uid, "session_uid": "S1"})
    assert session.get("session_dir", str(destination / "S1")) == str(destination / "S1")

    site.write(base + f'\n[sessions."{uid}/S1"]\ninstance = "new"\nmicrographs = "deleted"\n')
    plan = site.cli("plan")
    assert str(destination / "S1") in plan.out or "delete" in plan.out, plan.out
    applied = site.cli("apply", "--auto-approve", "--allow-destroy")
    assert applied.code == 0, applied.err
    assert _files(destination / "S1", "micrographs") == []
    assert _files(source_dir / "S1", "micrographs") == source_micrographs, "the source instance's files remain"
    assert all(Path(path).exists() for path in source_micrographs)
    assert old_db.workspaces.find_one({"session_uid": "S1"})["data_management"]["micrographs"]["status"] == "active"


@pytest.mark.state_store
def test_after_a_move_a_deletion_acts_on_the_new_directory_only(two):
    site, old_db, _new_db, source_dir, base = two
    target = site.root / "storage2" / "CS-moved"
    project = f'\n[projects.apo]\nuid = "P1"\ninstance = "old"\npath = "{target}"\n'
    site.write(base + project)
    moved = site.cli("apply", "--auto-approve")  # without --allow-destroy the old directory stays
    assert moved.code == 0, moved.err
    assert source_dir.exists() and (target / "S1").is_dir()
    old_copy = _files(source_dir / "S1", "micrographs")
    assert old_copy
    site.write(base + project + '\n[sessions."P1/S1"]\ninstance = "old"\nmicrographs = "deleted"\n')
    applied = site.cli("apply", "--auto-approve", "--allow-destroy")
    assert applied.code == 0, applied.err
    assert _files(target / "S1", "micrographs") == []
    assert _files(source_dir / "S1", "micrographs") == old_copy or not source_dir.exists()


def test_a_recorded_session_directory_elsewhere_is_never_followed(two):
    site, old_db, _new_db, source_dir, base = two
    elsewhere = site.root / "someone-else" / "S1"
    (elsewhere / "motioncorrected").mkdir(parents=True)
    victim = elsewhere / "motioncorrected" / "movie_0001_patch_aligned.mrc"
    victim.write_bytes(b"not ours")
    old_db.workspaces.update_one({"session_uid": "S1"}, {"$set": {"session_dir": str(elsewhere)}})
    site.write(base + '\n[sessions."P1/S1"]\ninstance = "old"\nmicrographs = "deleted"\n')
    applied = site.cli("apply", "--auto-approve", "--allow-destroy")
    assert applied.code == 0, applied.err
    assert victim.read_bytes() == b"not ours"
    assert _files(source_dir / "S1", "micrographs") == []


def test_a_session_directory_linked_outside_the_project_is_an_error_for_its_address(two):
    site, old_db, _new_db, source_dir, base = two
    outside = site.root / "outside-S1"
    (source_dir / "S1").rename(outside)
    os.symlink(outside, source_dir / "S1")
    before = _files(outside, "micrographs")
    site.write(base + '\n[sessions."P1/S1"]\ninstance = "old"\nmicrographs = "deleted"\n')
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 1 and "session:P1/S1/micrographs" in plan.out + plan.err
    assert "outside the project directory" in plan.out + plan.err
    assert site.cli("apply", "--auto-approve", "--allow-destroy").code == 1
    assert _files(outside, "micrographs") == before

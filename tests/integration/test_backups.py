"""MongoDB backups end to end: a real mongod on 127.0.0.1, real files, the real CLI."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument

from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, read_manifest
from tests.conftest import popen_cli

DATA = Path(__file__).resolve().parents[1] / "data"
RAW = bson.CodecOptions(document_class=RawBSONDocument)


def _seed(client, name: str, jobs: int = 2500) -> None:
    db = client[name]
    db.jobs.insert_many([{"uid": f"J{index}", "n": index, "status": "completed", "params": {"a": [1, 2.5, "x"]},
                          "created": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=index),
                          "blob": bson.Binary(bytes([index % 256]) * 16)} for index in range(jobs)])
    db.jobs.create_index([("uid", pymongo.ASCENDING)], unique=True)
    db.users.insert_many([{"email": f"user{index}@lab.example", "roles": ["admin"] if index == 0 else []}
                          for index in range(5)])


def _raw_documents(client, database: str, collection: str) -> list[bytes]:
    return [doc.raw for doc in client[database].get_collection(collection, codec_options=RAW).find({}).sort("_id", 1)]


def _index_keys(client, database: str, collection: str) -> list[dict]:
    return sorted((dict(index["key"]) for index in client[database][collection].list_indexes()), key=str)


def _config(site, mongo, database: str, fmt: str = "archive", compress: bool = True, extra: str = "") -> None:
    (site.root / "backups").mkdir(exist_ok=True)
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n\n[databases.cs.backup]\n'
               f'to = "backups"\nevery = "1d"\nformat = "{fmt}"\nmethod = "python"\n'
               f'compress = {str(compress).lower()}\n'
               + extra)


@pytest.fixture
def dbname() -> str:
    return f"meteor_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("fmt,compress", [("archive", True), ("archive", False), ("directory", True),
                                          ("directory", False)])
def test_dump_verify_restore_round_trip(site, mongo, client, dbname, fmt, compress):
    _seed(client, dbname)
    _config(site, mongo, dbname, fmt, compress)
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2 and "+ backup: no backup yet" in plan.out, plan.out + plan.err
    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    assert site.cli("plan", "--detailed-exitcode").code == 0

    (manifest_path,) = sorted((site.root / "backups").glob(f"*{MANIFEST_SUFFIX}"))
    manifest = read_manifest(manifest_path)
    assert manifest.collections["jobs"].documents == 2500 and manifest.collections["users"].documents == 5
    assert manifest.format == fmt and manifest.compressed == compress and manifest.method == "python"
    assert site.cli("backups", "verify").code == 0

    target = f"{dbname}_restored"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    assert f"restored {target}.jobs: 2,500 documents" in restored.out
    for collection in ("jobs", "users"):
        assert _raw_documents(client, target, collection) == _raw_documents(client, dbname, collection)
        assert _index_keys(client, target, collection) == _index_keys(client, dbname, collection)


def test_restore_refuses_a_non_empty_target_and_changes_nothing(site, mongo, client, dbname):
    _seed(client, dbname, jobs=50)
    _config(site, mongo, dbname)
    site.cli("reconcile")
    backup_id = json.loads(site.cli("backups", "list", "--json").out)[0]["id"]
    refused = site.cli("backups", "restore", backup_id, "--uri", mongo.uri)  # into the live database itself
    assert refused.code == 1
    assert "these collections are not empty: jobs (50 documents), users (5 documents)" in refused.err
    assert client[dbname].jobs.count_documents({}) == 50


def test_a_damaged_backup_fails_verification_and_is_never_restored(site, mongo, client, dbname):
    _seed(client, dbname, jobs=200)
    _config(site, mongo, dbname, compress=False)
    site.cli("reconcile")
    (archive,) = (site.root / "backups").glob("*.archive")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    verified = site.cli("backups", "verify")
    assert verified.code == 1 and "DAMAGED" in verified.out and "sha256 differs from the manifest" in verified.out
    target = f"{dbname}_x"
    refused = site.cli("backups", "restore", str(archive), "--uri", mongo.uri, "--database", target)
    assert refused.code == 1 and "refusing to restore the damaged backup" in refused.err
    assert target not in client.list_database_names() or client[target].list_collection_names() == []



def test_a_backup_whose_manifest_cannot_be_read_is_an_error_in_list_and_verify(site, mongo, client, dbname):
    """Neither listing nor verifying may leave such a backup out quietly: "all ok" over a backup
    nobody can read is the false all-good this tool must never print."""
    _seed(client, dbname, jobs=10)
    _config(site, mongo, dbname)
    assert site.cli("reconcile").code == 0
    (manifest_path,) = (site.root / "backups").glob(f"*{MANIFEST_SUFFIX}")
    assert site.cli("backups", "list").code == 0 and site.cli("backups", "verify").code == 0
    manifest_path.write_text(manifest_path.read_text().replace('"documents": 10', '"documents": "ten"'))
    listed = site.cli("backups", "list")
    assert listed.code == 1, listed.out + listed.err
    assert f"error: {manifest_path}: unreadable manifest" in listed.err and "No backups yet" not in listed.err
    as_json = site.cli("backups", "list", "--json")
    assert as_json.code == 1 and json.loads(as_json.out) == [] and str(manifest_path) in as_json.err
    verified = site.cli("backups", "verify")
    assert verified.code == 1, verified.out + verified.err
    assert f"DAMAGED {manifest_path}\n  unreadable manifest (" in verified.out
    assert "1 of 1 backup(s) failed verification." in verified.err

def test_restores_what_other_tools_wrote(site, mongo, client, dbname):
    site.write("")
    jobflow = site.cli("backups", "restore", str(DATA / "jobflow-remote"), "--uri", mongo.uri, "--database", dbname)
    assert jobflow.code == 0, jobflow.err
    with open(DATA / "jobflow-remote" / "jobs.bson.gz", "rb") as stream:
        import gzip

        expected = bson.decode_all(gzip.decompress(stream.read()))
    assert [bson.decode(raw) for raw in _raw_documents(client, dbname, "jobs")] == expected
    with_index = site.cli("backups", "restore", str(DATA / "mongo-tools/mongorestore/testdata/coll_with_index"),
                          "--uri", mongo.uri, "--database", f"{dbname}_b")
    assert with_index.code == 0, with_index.err
    keys = _index_keys(client, f"{dbname}_b", "foo")
    assert {"f": 1.0} in keys or {"f": 1} in keys


def test_malformed_inputs_are_refused_with_one_line(site, mongo):
    site.write("")
    for path in ("mongo-tools/mongorestore/testdata/bad-format.archive", "mongo-tools/bsondump/testdata"):
        result = site.cli("backups", "restore", str(DATA / path), "--uri", mongo.uri, "--database", "never")
        assert result.code == 1, result
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def _age_backup(site, backup_id: str, new_time: datetime) -> str:
    """A copy of a real backup, dated ``new_time`` (as if taken then)."""
    folder = site.root / "backups"
    (manifest_path,) = folder.glob(f"{backup_id}*{MANIFEST_SUFFIX}")
    manifest = read_manifest(manifest_path)
    data = folder / manifest_path.name[: -len(MANIFEST_SUFFIX)]
    old_id = f"cs-{new_time:%Y%m%dT%H%M%SZ}"
    new_data = folder / data.name.replace(backup_id, old_id)
    new_data.write_bytes(data.read_bytes())
    files = [dataclasses.replace(item, path=new_data.name) for item in manifest.files]
    copy = dataclasses.replace(manifest, backup_id=old_id, started_at=new_time, finished_at=new_time, files=files)
    (folder / (new_data.name + MANIFEST_SUFFIX)).write_text(copy.to_json())
    return old_id


@pytest.mark.state_store
def test_retention_prunes_destructively_and_never_the_newest(site, mongo, client, dbname):
    _seed(client, dbname, jobs=10)
    _config(site, mongo, dbname, extra="retention = { keep_daily = 2 }\n")
    site.cli("reconcile")
    (newest,) = [row["id"] for row in json.loads(site.cli("backups", "list", "--json").out)]
    now = datetime.now(UTC)
    old = [_age_backup(site, newest, now - timedelta(days=days)) for days in (1, 2, 3)]
    plan = site.cli("plan")
    assert "Destructive (need --allow-destroy): database:cs (prune), database:cs (prune)." in plan.out, plan.out
    assert f"{old[1]} is not kept by retention (keep_daily=2)" in plan.out
    assert "retention keeps 2" in plan.out
    assert site.cli("reconcile").code == 2  # pending, nothing removed
    assert len(json.loads(site.cli("backups", "list", "--json").out)) == 4
    assert site.cli("reconcile", "--allow-destroy").code == 0
    left = [row["id"] for row in json.loads(site.cli("backups", "list", "--json").out)]
    assert left == [old[0], newest]


@pytest.mark.state_store
def test_leftovers_of_killed_runs_are_cleaned_up_without_allow_destroy(site, mongo, client, dbname):
    _seed(client, dbname, jobs=10)
    _config(site, mongo, dbname)
    site.cli("reconcile")
    folder = site.root / "backups"
    (folder / ".tmp-cs-20260101T000000Z.archive.gz").write_bytes(b"half")
    (folder / "cs-20260102T000000Z.archive.gz").write_bytes(b"no manifest")
    plan = site.cli("plan")
    assert "+ cleanup: 2 incomplete backup(s) left by interrupted runs" in plan.out
    assert site.cli("reconcile").code == 0
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(MANIFEST_SUFFIX)) == [
        p.name[: -len(MANIFEST_SUFFIX)] for p in folder.glob(f"*{MANIFEST_SUFFIX}")]


def test_kill_9_mid_dump_leaves_no_backup_under_a_final_name(site, mongo, client, dbname):
    _seed(client, dbname, jobs=30_000)
    _config(site, mongo, dbname, compress=False)
    process = popen_cli(site.args("reconcile"))
    folder = site.root / "backups"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".tmp-") for p in folder.iterdir()):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert not list(folder.glob(f"*{MANIFEST_SUFFIX}")) or all(
        read_manifest(p).collections["jobs"].documents == 30_000 for p in folder.glob(f"*{MANIFEST_SUFFIX}"))
    finals = [p for p in folder.iterdir() if not p.name.startswith(".tmp-") and not p.name.endswith(MANIFEST_SUFFIX)]
    manifests = {p.name[: -len(MANIFEST_SUFFIX)] for p in folder.glob(f"*{MANIFEST_SUFFIX}")}
    assert all(p.name in manifests for p in finals) or len(finals) <= 1  # at most the rename-to-manifest instant
    from reconciler.state import lock
    from reconciler.state.store import StateStore

    store = StateStore(site.state_url)
    held = lock.holder(store)
    store.dispose()
    assert held is not None and held.pid == process.pid
    assert site.cli("reconcile").code == 0  # no force-unlock: the lock died with its process
    assert site.cli("plan", "--detailed-exitcode").code == 0
    assert site.cli("backups", "verify").code == 0


def test_an_unreachable_database_fails_alone_and_never_shows_its_password(site, mongo, client, dbname, monkeypatch):
    _seed(client, dbname, jobs=5)
    monkeypatch.setenv("DOWN_URI", "mongodb://ops:s3cret-pass@127.0.0.1:1/?serverSelectionTimeoutMS=500")
    (site.root / "backups").mkdir()
    site.write(f'[databases.down]\nuri_env = "DOWN_URI"\ndatabase = "x"\nconnect_timeout = "1s"\n'
               f'[databases.down.backup]\nto = "backups"\n\n'
               f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\nto = "backups"\n'
               'method = "python"\n')
    result = site.cli("reconcile")
    assert result.code == 1
    assert "database:down: cannot reach mongodb://ops:***@127.0.0.1:1" in result.err
    assert "s3cret" not in result.err + result.out
    assert len(json.loads(site.cli("backups", "list", "cs", "--json").out)) == 1
    saved = site.root / "p.json"
    site.cli("plan", "-o", str(saved))
    assert "s3cret" not in saved.read_text()


def test_a_password_in_the_config_is_refused(site):
    site.write('[databases.cs]\nuri = "mongodb://admin:hunter2@db:27017"\ndatabase = "meteor"\n')
    result = site.cli("validate")
    assert result.code == 1 and ":2:1: [databases.cs] uri holds a password" in result.err
    assert "hunter2" not in result.err


def test_a_missing_destination_is_reported_not_created(site, mongo, dbname):
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\nto = "nowhere"\n')
    result = site.cli("plan")
    assert result.code == 1 and "nowhere does not exist; create or mount it" in result.out
    assert not (site.root / "nowhere").exists()


def test_a_restore_that_fails_midway_leaves_nothing_behind(site, mongo, client, dbname, tmp_path):
    dump = tmp_path / "dump" / "lab"
    dump.mkdir(parents=True)
    (dump / "a_good.bson").write_bytes(b"".join(bson.encode({"_id": index, "ok": True}) for index in range(10)))
    duplicated = [bson.encode({"_id": 1}), bson.encode({"_id": 2}), bson.encode({"_id": 1})]
    (dump / "b_bad.bson").write_bytes(b"".join(duplicated))  # valid BSON, but the server refuses the third
    site.write("")
    result = site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database", dbname)
    assert result.code == 1 and "failed and was rolled back" in result.err, result
    assert client[dbname].list_collection_names() == []


def test_two_collections_may_not_be_mapped_onto_one(site, mongo, client, dbname):
    site.write("")
    result = site.cli("backups", "restore", str(DATA / "jobflow-remote"), "--uri", mongo.uri, "--database", dbname,
                      "--map", "jobs=x", "--map", "flows=x")
    assert result.code == 1 and "--map sends several collections into x" in result.err
    assert client[dbname].list_collection_names() == []


def test_restores_a_mongodump_archive(site, mongo, client, dbname):
    site.write("")
    result = site.cli("backups", "restore", str(DATA / "mongo-tools/mongorestore/testdata/test.bar.archive"),
                      "--uri", mongo.uri, "--database", dbname, "--map", "system.version=version")
    assert result.code == 0, result.err
    assert client[dbname]["bar"].count_documents({}) == 1


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs), so a dump runs out of space for real."""
    import subprocess

    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_mid_dump_leaves_nothing_under_a_final_name(site, mongo, client, dbname, tiny_disk):
    _seed(client, dbname, jobs=3000)  # about 400 KiB of BSON: more than the disk holds
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\n'
               f'to = "{tiny_disk}"\nmethod = "python"\ncompress = false\n')
    result = site.cli("reconcile")
    assert result.code == 1
    assert "No space left on device" in result.err, result.err
    assert list(tiny_disk.iterdir()) == []  # neither a final name nor a temporary one

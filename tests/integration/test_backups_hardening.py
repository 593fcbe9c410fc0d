"""Consistent snapshots on a replica set, a killed restore and its checkpoint, damaged
compressed backups: on a real mongod."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import bson
import pymongo
import pytest

from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX
from reconciler.kinds.backups.dump import DumpRequest, dump_python
from tests.conftest import popen_cli

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def dbname() -> str:
    return f"acct_{uuid.uuid4().hex[:8]}"


def _seed_accounts(client, database: str) -> None:
    client[database].a.insert_one({"_id": "acct", "qty": 100})
    client[database].b.insert_one({"_id": "acct", "qty": 0})


def _move(client, database: str, amount: int) -> None:
    """Move ``amount`` from a to b in one transaction: a + b stays 100 at every point in time."""
    with client.start_session() as session, session.start_transaction():
        client[database].a.update_one({"_id": "acct"}, {"$inc": {"qty": -amount}}, session=session)
        client[database].b.update_one({"_id": "acct"}, {"$inc": {"qty": amount}}, session=session)


def _dump_with_a_move_between_collections(client, database: str, destination: Path, consistent: str | None):
    """A dump during which the writer provably moves quantity after the first collection was read
    and before the second is (the dump calls ``before_collection`` before reading each one)."""
    seen: list[str] = []

    def writer(collection: str) -> None:
        seen.append(collection)
        if len(seen) == 2:
            _move(client, database, 10)

    destination.mkdir()
    request = DumpRequest(database_key="acct", database=database, collections=["*"], destination=destination,
                          format="archive", compress=True, backup_id=f"acct-{consistent or 'plain'}",
                          consistent=consistent, before_collection=writer)
    manifest = dump_python(client, request)
    assert sorted(seen) == ["a", "b"]
    return destination / f"{manifest.backup_id}.archive.gz", manifest


def _total(client, database: str) -> int:
    return client[database].a.find_one()["qty"] + client[database].b.find_one()["qty"]


@pytest.mark.parametrize("consistent", [None, "oplog"])
def test_a_consistent_backup_keeps_the_invariant_a_plain_one_breaks_it(site, mongo_rs, dbname, tmp_path, consistent):
    client = pymongo.MongoClient(mongo_rs.uri)
    try:
        _seed_accounts(client, dbname)
        archive, manifest = _dump_with_a_move_between_collections(client, dbname, tmp_path / "b", consistent)
        assert _total(client, dbname) == 100
        site.write("")
        target = f"{dbname}_r"
        restored = site.cli("backups", "restore", str(archive), "--uri", mongo_rs.uri, "--database", target)
        assert restored.code == 0, restored.err
        if consistent:
            assert manifest.consistent == "oplog" and manifest.oplog_entries == 1  # the transaction
            assert "replayed 1 oplog entries" in restored.out
            assert _total(client, target) == 100
            assert client[target].a.find_one()["qty"] == 90 and client[target].b.find_one()["qty"] == 10
        else:
            assert _total(client, target) != 100  # the torn read a consistent backup prevents
    finally:
        client.close()


def test_a_consistent_directory_backup_stores_oplog_bson_beside_the_databases(mongo_rs, dbname, tmp_path):
    client = pymongo.MongoClient(mongo_rs.uri)
    try:
        _seed_accounts(client, dbname)
        destination = tmp_path / "b"
        destination.mkdir()
        request = DumpRequest(database_key="acct", database=dbname, collections=["*"], destination=destination,
                              format="directory", compress=False, backup_id="acct-dir", consistent="oplog",
                              before_collection=lambda name: _move(client, dbname, 1) if name == "b" else None)
        manifest = dump_python(client, request)
        entries = bson.decode_all((destination / "acct-dir" / "oplog.bson").read_bytes())
        assert manifest.oplog_entries == len(entries) == 1 and entries[0]["o"]["applyOps"]
    finally:
        client.close()


def test_a_killed_restore_is_named_and_cleaned_up_by_the_next_one(site, mongo, dbname, tmp_path):
    client = pymongo.MongoClient(mongo.uri)
    try:
        dump = tmp_path / "dump" / "lab"
        dump.mkdir(parents=True)
        (dump / "a.bson").write_bytes(b"".join(bson.encode({"_id": index}) for index in range(5000)))
        (dump / "b.bson").write_bytes(b"".join(bson.encode({"_id": index}) for index in range(10)))
        site.write("")
        # TEST-ONLY hook: the restore pauses (and says so) once 2000 documents are in
        process = popen_cli(site.args("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri,
                                      "--database", dbname),
                            env={"RECONCILER_TEST_RESTORE_PAUSE_AFTER": "2000"})
        assert process.stderr is not None
        for line in process.stderr:
            if "paused after" in line:
                break
        process.kill()  # kill -9 at a known point: 2000 documents of a in, b created empty
        process.wait(30)
        assert client[dbname].a.count_documents({}) == 2000
        refused = site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database", dbname)
        assert refused.code == 1
        assert f"left these collections half-restored: {dbname}.a, {dbname}.b" in refused.err
        assert "--resume-cleanup" in refused.err
        client[dbname].other.insert_one({"_id": 1})  # not the restore's: never dropped
        resumed = site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database", dbname,
                           "--resume-cleanup")
        assert resumed.code == 0, resumed.err
        assert f"dropped 2 half-restored collection(s) of the interrupted restore: {dbname}.a, {dbname}.b" \
            in resumed.err
        assert client[dbname].a.count_documents({}) == 5000 and client[dbname].b.count_documents({}) == 10
        assert client[dbname].other.count_documents({}) == 1
        assert site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database",
                        f"{dbname}_2").code == 0  # the checkpoint is gone once a restore finished
    finally:
        client.close()


def _backups(site, mongo, client, dbname: str, fmt: str, count: int) -> list[Path]:
    client[dbname].jobs.insert_many([{"_id": index, "payload": "x" * 200} for index in range(500)])
    (site.root / "backups").mkdir(exist_ok=True)
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\n'
               f'to = "backups"\nformat = "{fmt}"\nmethod = "python"\ncompress = true\n')
    assert site.cli("apply", "--auto-approve").code == 0
    manifests = sorted((site.root / "backups").glob(f"*{MANIFEST_SUFFIX}"))
    return [path.parent / path.name[: -len(MANIFEST_SUFFIX)] for path in manifests]


def _copy_backup(site, path: Path, new_id: str) -> Path:
    import shutil

    manifest = path.parent / (path.name + MANIFEST_SUFFIX)
    old_id = path.name.split(".")[0]
    copy = path.parent / path.name.replace(old_id, new_id)
    shutil.copytree(path, copy) if path.is_dir() else shutil.copy(path, copy)
    text = manifest.read_text().replace(old_id, new_id)
    (path.parent / (copy.name + MANIFEST_SUFFIX)).write_text(text)
    return copy


def _unchecked(site, path: Path) -> None:
    """Drop the file checksums from a manifest, so that the readers meet the damage themselves."""
    import json

    manifest = path.parent / (path.name + MANIFEST_SUFFIX)
    data = json.loads(manifest.read_text())
    data["files"] = []
    manifest.write_text(json.dumps(data))


def test_damaged_compressed_backups_are_damaged_lines_and_verify_goes_on(site, mongo, dbname):
    client = pymongo.MongoClient(mongo.uri)
    try:
        (good_dir,) = _backups(site, mongo, client, dbname, "directory", 1)
        corrupt = _copy_backup(site, good_dir, "cs-20200101T000000Z")
        bson_gz = next(corrupt.rglob("jobs.bson.gz"))
        data = bytearray(bson_gz.read_bytes())
        data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16
        bson_gz.write_bytes(bytes(data))
        _unchecked(site, corrupt)
        extra = _copy_backup(site, good_dir, "cs-20200102T000000Z")
        (extra / dbname / "stray.bson").write_bytes(bson.encode({"_id": 1}))
        verified = site.cli("backups", "verify")
        assert verified.code == 1
        assert "Traceback" not in verified.err and "internal error" not in verified.err
        assert f"DAMAGED {corrupt}" in verified.out and f"DAMAGED {extra}" in verified.out
        assert f"ok      {good_dir}" in verified.out
        assert "not listed in the manifest" in verified.out
        refused = site.cli("backups", "restore", str(extra), "--uri", mongo.uri, "--database", f"{dbname}_x")
        assert refused.code == 1 and "not listed in the manifest" in refused.err
        assert f"{dbname}_x" not in client.list_database_names()
    finally:
        client.close()


def test_a_truncated_archive_gz_is_a_damaged_line(site, mongo, dbname):
    client = pymongo.MongoClient(mongo.uri)
    try:
        (good,) = _backups(site, mongo, client, dbname, "archive", 1)
        truncated = _copy_backup(site, good, "cs-20200101T000000Z")
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
        _unchecked(site, truncated)
        verified = site.cli("backups", "verify")
        assert verified.code == 1 and "Aborted" not in verified.out + verified.err
        assert f"DAMAGED {truncated}" in verified.out and f"ok      {good}" in verified.out
        restored = site.cli("backups", "restore", str(truncated), "--uri", mongo.uri, "--database", f"{dbname}_x")
        assert restored.code == 1 and "Aborted" not in restored.err and len(restored.err.strip().splitlines()) == 1
        header_only = _copy_backup(site, good, "cs-20200102T000000Z")
        header_only.write_bytes(gzip.compress(b"\x6d\xe2\x99\x81")[:-6])
        _unchecked(site, header_only)
        again = site.cli("backups", "verify")
        assert f"DAMAGED {header_only}" in again.out and "Aborted" not in again.out + again.err
    finally:
        client.close()


def test_a_failed_restore_empties_an_existing_empty_collection_again_and_never_drops_it(site, mongo, dbname,
                                                                                         tmp_path):
    client = pymongo.MongoClient(mongo.uri)
    try:
        client[dbname].create_collection("a_good", validator={"ok": {"$exists": True}})  # the operator's, empty
        dump = tmp_path / "dump" / "lab"
        dump.mkdir(parents=True)
        (dump / "a_good.bson").write_bytes(b"".join(bson.encode({"_id": index, "ok": True}) for index in range(10)))
        (dump / "b_bad.bson").write_bytes(b"".join(bson.encode({"_id": key}) for key in (1, 2, 1)))
        site.write("")
        result = site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database", dbname)
        assert result.code == 1 and "failed and was rolled back" in result.err
        assert client[dbname].list_collection_names() == ["a_good"]
        assert client[dbname].a_good.count_documents({}) == 0
        assert "validator" in client[dbname].list_collections().next()["options"]
    finally:
        client.close()


def test_consistent_oplog_through_the_cli_on_a_replica_set(site, mongo_rs, dbname):
    client = pymongo.MongoClient(mongo_rs.uri)
    try:
        _seed_accounts(client, dbname)
        (site.root / "backups").mkdir()
        site.write(f'[databases.cs]\nuri = "{mongo_rs.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\n'
                   'to = "backups"\nmethod = "python"\nconsistent = "oplog"\n')
        applied = site.cli("apply", "--auto-approve")
        assert applied.code == 0, applied.out + applied.err
        assert "0 oplog entries" in applied.out + applied.err
        from reconciler.kinds.backups.catalog import read_manifest

        (manifest_path,) = (site.root / "backups").glob(f"*{MANIFEST_SUFFIX}")
        assert read_manifest(manifest_path).consistent == "oplog"
        assert site.cli("backups", "verify").code == 0
    finally:
        client.close()

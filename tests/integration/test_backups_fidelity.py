"""Backups that lose nothing, on a real mongod: time-series collections, views, system.js,
zero timestamps, names mongodump escapes, dates beyond Python's range, archives shaped like
mongodump's, mongorestore's namespace options, errors that say what happened."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

from reconciler.kinds.backups.archive import ArchiveReader, open_maybe_gzip
from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, read_manifest

RAW = CodecOptions(document_class=RawBSONDocument)
MS = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)


@pytest.fixture
def dbname() -> str:
    return f"lab_{uuid.uuid4().hex[:8]}"


def _backup(site, mongo, database: str, fmt: str, compress: bool = False, extra: str = ""):
    (site.root / "backups").mkdir(exist_ok=True)
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{database}"\n\n[databases.cs.backup]\n'
               f'to = "backups"\nformat = "{fmt}"\nmethod = "python"\ncompress = {str(compress).lower()}\n' + extra)
    applied = site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    (manifest_path,) = sorted((site.root / "backups").glob(f"*{MANIFEST_SUFFIX}"))
    return read_manifest(manifest_path), manifest_path, applied


def _raw_sorted(client, database: str, collection: str) -> list[bytes]:
    return sorted(bytes(doc.raw) for doc in client[database].get_collection(collection, codec_options=RAW).find({}))


def _infos(client, database: str) -> dict[str, dict]:
    return {info["name"]: info for info in client[database].list_collections()}


def _seed_timeseries(client, database: str, count: int = 500) -> None:
    db = client[database]
    db.create_collection("ts", timeseries={"timeField": "t", "metaField": "sensor", "granularity": "minutes"})
    start = datetime(2024, 3, 1, tzinfo=UTC)
    db.ts.insert_many([{"t": start + timedelta(seconds=20 * index), "sensor": {"id": f"s{index % 3}"},
                        "temp": 15 + index / 100} for index in range(count)])
    db.ts.create_index([("sensor", 1)], name="sensor_1")


@pytest.mark.parametrize("fmt,compress", [("archive", True), ("directory", False)])
def test_timeseries_collections_are_dumped_and_restored_as_timeseries(site, mongo, client, dbname, fmt, compress):
    _seed_timeseries(client, dbname)
    manifest, _path, applied = _backup(site, mongo, dbname, fmt, compress)
    stats = manifest.collections["ts"]
    assert stats.type == "timeseries" and stats.measurements == 500 and stats.documents >= 1
    assert "1 time-series collection" in applied.err + applied.out
    assert site.cli("backups", "verify").code == 0
    target = f"{dbname}_r"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    infos = _infos(client, target)
    assert infos["ts"]["type"] == "timeseries"
    assert infos["ts"]["options"]["timeseries"] == _infos(client, dbname)["ts"]["options"]["timeseries"]
    assert client[target].ts.count_documents({}) == 500
    assert "sensor_1" in {index["name"] for index in client[target].ts.list_indexes()}
    assert _raw_sorted(client, target, "system.buckets.ts") == _raw_sorted(client, dbname, "system.buckets.ts")


@pytest.mark.parametrize("fmt", ["archive", "directory"])
def test_views_and_system_js_are_dumped_and_restored(site, mongo, client, dbname, fmt):
    db = client[dbname]
    db.people.insert_many([{"_id": index, "name": f"n{index}"} for index in range(30)])
    db.command({"create": "recent", "viewOn": "people", "pipeline": [{"$match": {"_id": {"$gte": 20}}}],
                "collation": {"locale": "en", "strength": 2}})
    db["system.js"].insert_one({"_id": "addOne", "value": bson.Code("function (x) { return x + 1; }")})
    manifest, _path, _applied = _backup(site, mongo, dbname, fmt)
    assert manifest.collections["recent"].type == "view"
    assert manifest.collections["system.js"].documents == 1
    target = f"{dbname}_r"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    source, copy = _infos(client, dbname), _infos(client, target)
    assert copy["recent"]["type"] == "view" and copy["recent"]["options"] == source["recent"]["options"]
    assert [doc["_id"] for doc in client[target].recent.find()] == list(range(20, 30))
    assert _raw_sorted(client, target, "system.js") == _raw_sorted(client, dbname, "system.js")


def _insert_with_zero_timestamps(client, database: str) -> None:
    """As the mongo-tools fixture generator did: the server fills an inserted Timestamp(0, 0)
    with the current time, so insert another value and $set the zero back."""
    collection = client[database].stamps
    collection.insert_one({"_id": 1, "ts0": bson.Timestamp(7, 7), "x": 1, "last": bson.Timestamp(7, 7),
                           "nested": {"z": bson.Timestamp(0, 0)}})
    collection.update_one({"_id": 1}, {"$set": {"ts0": bson.Timestamp(0, 0), "last": bson.Timestamp(0, 0)}})
    stored = collection.find_one({"_id": 1})
    assert stored["ts0"] == bson.Timestamp(0, 0) and stored["last"] == bson.Timestamp(0, 0)


@pytest.mark.parametrize("fmt", ["archive", "directory"])
def test_top_level_zero_timestamps_are_kept(site, mongo, client, dbname, fmt):
    _insert_with_zero_timestamps(client, dbname)
    manifest, _path, _applied = _backup(site, mongo, dbname, fmt)
    target = f"{dbname}_r"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    assert _raw_sorted(client, target, "stamps") == _raw_sorted(client, dbname, "stamps")


def test_directory_names_are_escaped_as_mongodump_escapes_them(site, mongo, client, dbname):
    names = ["a/b", "pct%2Fname", "weird name ☃"]
    for name in names:
        client[dbname][name].insert_many([{"_id": index} for index in range(3)])
    manifest, _path, _applied = _backup(site, mongo, dbname, "directory")
    folder = site.root / "backups" / manifest.backup_id / dbname
    assert {path.name for path in folder.iterdir()} >= {
        "a%2Fb.bson", "pct%252Fname.bson", "weird+name+%E2%98%83.bson", "a%2Fb.metadata.json"}
    target = f"{dbname}_r"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    assert sorted(client[target].list_collection_names()) == sorted(names)


def test_dates_beyond_pythons_range_verify_and_restore_exactly(site, mongo, client, dbname):
    documents = [{"_id": 1, "d": bson.DatetimeMS(253402300800000)}, {"_id": 2, "d": bson.DatetimeMS(8640000000000000)},
                 {"_id": 3, "d": bson.DatetimeMS(-8640000000000000)}]
    client[dbname].get_collection("dates", codec_options=MS).insert_many(documents)
    manifest, _path, _applied = _backup(site, mongo, dbname, "archive")
    verified = site.cli("backups", "verify")
    assert verified.code == 0, verified.out
    target = f"{dbname}_r"
    restored = site.cli("backups", "restore", manifest.backup_id, "--uri", mongo.uri, "--database", target)
    assert restored.code == 0, restored.err
    assert _raw_sorted(client, target, "dates") == _raw_sorted(client, dbname, "dates")


def test_archives_are_shaped_like_mongodumps(site, mongo, client, dbname):
    _seed_timeseries(client, dbname, count=50)
    client[dbname].people.insert_one({"_id": 1})
    client[dbname].command({"create": "v", "viewOn": "people", "pipeline": []})
    manifest, manifest_path, _applied = _backup(site, mongo, dbname, "archive", compress=True)
    data = manifest_path.parent / manifest_path.name[: -len(MANIFEST_SUFFIX)]
    with open(data, "rb") as raw:
        stream = open_maybe_gzip(raw)
        reader = ArchiveReader(stream, data.name)
        prelude = {meta.namespace: meta.type for meta in reader.contents.collections}
        list(reader.documents())  # checks every CRC
    assert prelude == {f"{dbname}.ts": "timeseries", f"{dbname}.people": "collection", f"{dbname}.v": "view"}
    # every namespace ends with an EOF block, the view's too, as mongorestore requires
    raw_bytes = gzip.decompress(data.read_bytes())
    eofs = []
    offset = raw_bytes.index(b"\xff\xff\xff\xff") + 4
    while offset < len(raw_bytes):
        length = int.from_bytes(raw_bytes[offset:offset + 4], "little", signed=True)
        if length == -1:
            offset += 4
            continue
        document = bson.decode(raw_bytes[offset:offset + length], MS)
        if document.get("EOF") is True:
            eofs.append(f"{document['db']}.{document['collection']}")
        offset += length
    assert sorted(eofs) == sorted([f"{dbname}.people", f"{dbname}.system.buckets.ts", f"{dbname}.v"])


def test_restore_puts_every_namespace_back_into_its_own_database_and_skips_server_internals(site, mongo, client):
    tag = uuid.uuid4().hex[:6]
    site.write("")
    dump = site.root / "dump"
    for database in (f"a_{tag}", f"b_{tag}", "admin"):
        (dump / database).mkdir(parents=True)
    (dump / f"a_{tag}" / "one.bson").write_bytes(bson.encode({"_id": 1}))
    (dump / f"b_{tag}" / "two.bson").write_bytes(bson.encode({"_id": 2}))
    (dump / "admin" / "system.version.bson").write_bytes(bson.encode({"_id": "x", "version": "1"}))
    result = site.cli("backups", "restore", str(dump), "--uri", mongo.uri)
    assert result.code == 0, result.err
    assert client[f"a_{tag}"].one.count_documents({}) == 1 and client[f"b_{tag}"].two.count_documents({}) == 1
    assert "skipped admin.system.version (server-internal)" in result.err
    assert client.admin["system.version"].find_one({"_id": "x"}) is None
    # include / exclude / from-to, as mongorestore spells them
    again = site.cli("backups", "restore", str(dump), "--uri", mongo.uri, "--ns-include", f"a_{tag}.*",
                     "--ns-from", f"a_{tag}.*", "--ns-to", f"c_{tag}.copy_*")
    assert again.code == 0, again.err
    assert client[f"c_{tag}"].copy_one.count_documents({}) == 1
    assert f"skipped b_{tag}.two (not matched by --ns-include)" in again.err
    excluded = site.cli("backups", "restore", str(dump), "--uri", mongo.uri, "--ns-exclude", f"a_{tag}.*",
                        "--ns-from", f"b_{tag}.*", "--ns-to", f"d_{tag}.*")
    assert excluded.code == 0, excluded.err
    assert client[f"d_{tag}"].two.count_documents({}) == 1 and f"d_{tag}" not in str(excluded.out.count("a_"))
    # the empty-target rule holds for every target namespace
    refused = site.cli("backups", "restore", str(dump), "--uri", mongo.uri)
    assert refused.code == 1 and f"a_{tag}.one (1 documents)" in refused.err and f"b_{tag}.two" in refused.err


def test_failed_login_unknown_database_and_refusals_say_what_happened(site, mongo, client, dbname, monkeypatch):
    host = mongo.uri.split("//", 1)[1].split("/")[0]
    monkeypatch.setenv("LAB_URI", f"mongodb://ops:s3cret-pw@{host}/?authSource=admin")
    site.write("")
    login = site.cli("backups", "restore", "tests/data/jobflow-remote", "--uri-env", "LAB_URI", "--database", "x")
    assert login.code == 1
    assert f"authentication failed for ops on {host} (check the password in $LAB_URI)" in login.err
    assert "s3cret" not in login.err + login.out
    (site.root / "backups").mkdir()
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}_missing"\n[databases.cs.backup]\n'
               'to = "backups"\nmethod = "python"\n')
    unknown = site.cli("apply", "--auto-approve")
    assert unknown.code == 1 and f"database {dbname}_missing does not exist on" in unknown.err + unknown.out


def test_consistent_oplog_on_a_standalone_server_is_refused_at_plan_time(site, mongo, dbname, client):
    client[dbname].x.insert_one({"_id": 1})
    (site.root / "backups").mkdir()
    site.write(f'[databases.cs]\nuri = "{mongo.uri}"\ndatabase = "{dbname}"\n[databases.cs.backup]\n'
               'to = "backups"\nmethod = "python"\nconsistent = "oplog"\n')
    plan = site.cli("plan")
    assert plan.code == 1
    assert 'consistent = "oplog" needs a replica set' in plan.out + plan.err
    assert json.loads(site.cli("backups", "list", "--json").out) == []


def test_a_refused_command_is_one_line_with_the_servers_message(site, mongo, client, dbname, tmp_path):
    dump = tmp_path / "dump" / "lab"
    dump.mkdir(parents=True)
    (dump / "c.bson").write_bytes(bson.encode({"_id": 1}))
    (dump / "c.metadata.json").write_text('{"options":{"capped":true},"indexes":[],"collectionName":"c"}')
    site.write("")
    result = site.cli("backups", "restore", str(tmp_path / "dump"), "--uri", mongo.uri, "--database", dbname)
    host = mongo.uri.split("//", 1)[1].split("/")[0]
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert f"failed and was rolled back: the server at {host} refused the command: " in result.err
    assert "(InvalidOptions)" in result.err, result.err
    assert dbname not in client.list_database_names()


def test_users_and_roles_are_skipped_unless_asked_and_then_merged(site, mongo, client, dbname, tmp_path):
    from reconciler.kinds.backups.archive import ArchiveWriter, CollectionMeta

    client[dbname].command("createUser", "alice", pwd="pw-1", roles=[{"role": "read", "db": dbname}])
    client[dbname].command("createRole", "reader2", privileges=[], roles=[{"role": "read", "db": dbname}])
    users = [bytes(d.raw) for d in client.admin.get_collection("system.users", codec_options=RAW).find({"db": dbname})]
    roles = [bytes(d.raw) for d in client.admin.get_collection("system.roles", codec_options=RAW).find({"db": dbname})]
    archive = tmp_path / "whole.archive"
    with open(archive, "wb") as stream:
        writer = ArchiveWriter(stream, "6.0.5", "test")
        writer.begin([CollectionMeta("admin", "system.users", "{}", type="collection"),
                      CollectionMeta("admin", "system.roles", "{}", type="collection"),
                      CollectionMeta(dbname, "data", "{}", type="collection")])
        writer.write_collection("admin", "system.users", users)
        writer.write_collection("admin", "system.roles", roles)
        writer.write_collection(dbname, "data", [bson.encode({"_id": 1})])
    client[dbname].command("dropAllUsersFromDatabase")
    client[dbname].command("dropAllRolesFromDatabase")
    client.drop_database(dbname)
    site.write("")
    plain = site.cli("backups", "restore", str(archive), "--uri", mongo.uri, "--ns-exclude", f"{dbname}.*")
    assert plain.code == 0, plain.err
    assert "skipped admin.system.users (users and roles are restored only with --users-and-roles)" in plain.err
    assert client[dbname].command("usersInfo")["users"] == []
    asked = site.cli("backups", "restore", str(archive), "--uri", mongo.uri, "--users-and-roles")
    assert asked.code == 0, asked.err
    assert "restored admin.system.users: 1 users merged" in asked.out
    assert [user["user"] for user in client[dbname].command("usersInfo")["users"]] == ["alice"]
    assert [role["role"] for role in client[dbname].command("rolesInfo")["roles"]] == ["reader2"]
    host = mongo.uri.split("//", 1)[1].split("/")[0]
    with pymongo.MongoClient(f"mongodb://alice:pw-1@{host}/?authSource={dbname}") as alice:
        assert alice[dbname].data.count_documents({}) == 1
    assert "tempusers" not in client.admin.list_collection_names()
    client[dbname].command("dropAllUsersFromDatabase")
    client[dbname].command("dropAllRolesFromDatabase")

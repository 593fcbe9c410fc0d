"""Restoring what the real mongodump wrote gives what the real mongorestore gave.

tests/data/mongo-tools-real holds dumps written by mongodump 100.18 from a MongoDB 6.0.5 server
with every feature, and expected/*.json.gz: the real mongorestore's result, exported by
export_state.py. Here `reconciler backups restore` restores each into the real mongod of the
tests, the server is exported the same way, and everything but collection UUIDs must be equal.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from urllib.parse import urlparse

import pymongo
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "mongo-tools-real"
DATABASES = ("fidelity", "meteor", "bulk")


def _export_module():
    spec = importlib.util.spec_from_file_location("export_state", DATA / "export_state.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def exported(uri: str, databases: list[str], summarize: tuple[str, ...] = ()) -> dict:
    """The server's state as the oracle files record it (canonical Extended JSON)."""
    module = _export_module()
    state = module.export(urlparse(uri).port, databases, list(summarize))
    return json.loads(module.render(state))


def comparable(state: dict) -> dict:
    """Namespaces with types, options, info (UUIDs aside), indexes, counts and document digests."""
    out = {}
    for namespace, entry in state["namespaces"].items():
        entry = dict(entry)
        info = dict(entry.get("info") or {})
        info.pop("uuid", None)
        if "info" in entry:
            entry["info"] = info
        entry.pop("documents", None)  # raw_sha256 covers them byte for byte
        out[namespace] = entry
    return out


@pytest.fixture
def clean(mongo):
    """The fixture databases dropped before and after (they are restored under their own names)."""
    client = pymongo.MongoClient(mongo.uri)
    for name in DATABASES:
        client.drop_database(name)
    yield client
    for name in DATABASES:
        client.drop_database(name)
    client.close()


@pytest.mark.parametrize("fixture", ["whole-server.archive", "whole-server.archive.gz", "fidelity-dir",
                                     "fidelity-dir-gz"])
def test_restore_of_real_mongodump_output_matches_real_mongorestore(site, mongo, clean, fixture):
    expected = json.loads(gzip.decompress((DATA / "expected" / f"{fixture}.json.gz").read_bytes()))
    site.write("")
    result = site.cli("backups", "restore", str(DATA / fixture), "--uri", mongo.uri)
    assert result.code == 0, result.err
    if fixture.startswith("whole-server"):
        assert "skipped admin.system.version (server-internal)" in result.err
    state = exported(mongo.uri, expected["databases"])
    assert state["databases"] == expected["databases"]
    assert comparable(state) == comparable(expected)


def test_consistent_mongodump_archive_replays_its_oplog_as_mongorestore_does(site, mongo, clean):
    fixture = "oplog.archive.gz"
    expected = json.loads(gzip.decompress((DATA / "expected" / f"{fixture}.json.gz").read_bytes()))
    site.write("")
    result = site.cli("backups", "restore", str(DATA / fixture), "--uri", mongo.uri, "--oplog-replay")
    assert result.code == 0, result.err
    assert "replayed 94 oplog entries" in result.out
    state = exported(mongo.uri, expected["databases"], summarize=("bulk.data",))
    assert comparable(state) == comparable(expected)

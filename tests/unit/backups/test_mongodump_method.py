"""The mongodump method, with a stand-in mongodump script: mongodump itself is not installable here
(no Debian or PyPI package), so a small script plays it, writes a real archive, and records its argv."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

from reconciler.kinds.backups.dump import DumpRequest, dump_mongodump, mongodump_argv, parse_mongodump_counts

FAKE_MONGODUMP = """#!{python}
import json, sys, io, bson
sys.path.insert(0, {repo!r})
from reconciler.kinds.backups.archive import ArchiveWriter, CollectionMeta
args = sys.argv[1:]
config = open(args[args.index("--config") + 1]).read()
json.dump({{"argv": args, "config": config}}, open({record!r}, "w"))
out = [a for a in args if a.startswith("--archive=")][0].split("=", 1)[1]
with open(out, "wb") as stream:
    writer = ArchiveWriter(stream, "7.0.0", "mongodump 100.9.0")
    writer.begin([CollectionMeta("meteor", "jobs", '{{"indexes":[]}}')])
    writer.write_collection("meteor", "jobs", [bson.encode({{"_id": i}}) for i in range(3)])
print("2026-11-21T10:00:00.000+0000\\tdone dumping meteor.jobs (3 documents)", file=sys.stderr)
"""


class _Client:
    class admin:  # noqa: N801 - mimics pymongo's attribute
        @staticmethod
        def command(name):
            return {"version": "7.0.0"}


def test_the_uri_goes_through_a_config_file_never_the_command_line(tmp_path):
    record = tmp_path / "record.json"
    script = tmp_path / "mongodump"
    script.write_text(FAKE_MONGODUMP.format(python=sys.executable, repo=str(Path(__file__).resolve().parents[3]),
                                            record=str(record)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    request = DumpRequest("cs", "meteor", ["*"], tmp_path, "archive", False,
                          "cs-20261121T100000Z")
    manifest = dump_mongodump(str(script), "mongodb://ops:s3cret@db:27017/?authSource=admin", _Client(), request)
    seen = json.loads(record.read_text())
    assert "s3cret" not in " ".join(seen["argv"])
    assert "mongodb://ops:s3cret@db:27017/?authSource=admin" in seen["config"]
    assert manifest.method == "mongodump" and manifest.collections["jobs"].documents == 3
    assert (tmp_path / "cs-20261121T100000Z.archive").exists()
    assert not list(tmp_path.glob("reconciler-mongodump-*"))


def test_mongodump_arguments_and_counts():
    request = DumpRequest("cs", "meteor", ["jobs"], Path("/b"), "directory", True, "cs-x")
    assert mongodump_argv("/tmp/c.yaml", request, Path("/b/.tmp-cs-x")) == [
        "--config", "/tmp/c.yaml", "--db", "meteor", "--collection", "jobs", "--out", "/b/.tmp-cs-x", "--gzip"]
    log = "x\tdone dumping meteor.jobs (2500 documents)\ny\tdone dumping meteor.users (1 document)\n"
    assert parse_mongodump_counts(log) == {"meteor.jobs": 2500, "meteor.users": 1}

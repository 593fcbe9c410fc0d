"""Names and namespace patterns as the MongoDB database tools spell them (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import ApplyError
from reconciler.kinds.backups.names import Rename, escape_collection, pattern_regex, unescape_collection
from reconciler.kinds.backups.restore import RestoreOptions, plan_restore
from reconciler.kinds.backups.source import BackupSource, SourceCollection


@pytest.mark.parametrize("name,escaped", [("with/slash", "with%2Fslash"), ("pct%2Fname", "pct%252Fname"),
                                          ("weird name ☃", "weird+name+%E2%98%83"),
                                          ("system.buckets.ts", "system.buckets.ts"), ("a-b_c.d~e", "a-b_c.d~e")])
def test_collection_names_are_escaped_as_mongodump_escapes_them(name, escaped):
    # the escaped forms are the file names the real mongodump 100.18 wrote (tests/data/mongo-tools-real)
    assert escape_collection(name) == escaped
    assert unescape_collection(escaped) == name


@given(st.text(min_size=1, max_size=30))
def test_escaping_round_trips(name):
    assert unescape_collection(escape_collection(name)) == name
    assert "/" not in escape_collection(name)


def test_patterns_and_renames_follow_mongorestore():
    assert pattern_regex("meteor.*").match("meteor.jobs")
    assert pattern_regex("meteor.*").match("meteor.a.b")
    assert not pattern_regex("meteor.*").match("meteorx.jobs")
    assert pattern_regex("*.jobs").match("any.jobs")
    assert not pattern_regex(r"a.\*").match("a.b") and pattern_regex(r"a.\*").match("a.*")
    assert Rename("fidelity.*", "copy.*").apply("fidelity.with/slash") == "copy.with/slash"
    assert Rename("*.jobs_*", "*_old.jobs_*").apply("meteor.jobs_2024") == "meteor_old.jobs_2024"
    assert Rename("a.*", "b.*").apply("c.x") is None


def _source(*namespaces: tuple[str, str, str]) -> BackupSource:
    return BackupSource(Path("backup"), "archive",
                        [SourceCollection(db, coll, {"type": kind}, kind != "view") for db, coll, kind in namespaces])


def test_plan_restores_each_namespace_into_its_own_database_and_skips_server_internals():
    source = _source(("admin", "system.version", "collection"), ("a", "x", "collection"), ("b", "ts", "timeseries"),
                     ("b", "v", "view"), ("config", "settings", "collection"), ("local", "oplog.rs", "collection"),
                     ("a", "system.buckets.orphan", "collection"), ("admin", "system.users", "collection"))
    plan = plan_restore(source, RestoreOptions())
    assert [target.namespace for target in plan.targets] == ["a.x", "b.ts", "b.v"]
    assert dict(plan.skipped) == {
        "admin.system.version": "server-internal", "config.settings": "the config database belongs to the server",
        "local.oplog.rs": "the local database belongs to the server",
        "a.system.buckets.orphan": "time-series buckets without their collection's metadata in the backup",
        "admin.system.users": "users and roles are restored only with --users-and-roles"}
    assert plan.targets[1].data_collection == "system.buckets.ts"


def test_plan_options():
    source = _source(("a", "x", "collection"), ("a", "y", "collection"), ("b", "z", "collection"))
    only = plan_restore(source, RestoreOptions(include=["a.*"], exclude=["a.y"],
                                               renames=[Rename("a.*", "c.*")]))
    assert [t.namespace for t in only.targets] == ["c.x"]
    with pytest.raises(ApplyError, match="holds several databases"):
        plan_restore(source, RestoreOptions(database="new"))
    with pytest.raises(ApplyError, match="several collections into"):
        plan_restore(source, RestoreOptions(renames=[Rename("a.x", "one.x"), Rename("a.y", "one.x")]))
    with pytest.raises(ApplyError, match="same number of \\* wildcards"):
        plan_restore(source, RestoreOptions(renames=[Rename("a.*", "b.c")]))

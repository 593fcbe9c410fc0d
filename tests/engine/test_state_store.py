"""The state database: created on first use, versioned, and refusing unknown futures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlmodel import select

from reconciler.errors import StateError
from reconciler.state.store import StateStore
from reconciler.state.tables import ENGINE_SCHEMA_VERSION, SchemaVersion
from tests.conftest import REPO

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store


def test_first_use_creates_the_engine_tables(state_url):
    store = StateStore(state_url)
    assert {"journal", "locks", "runs", "schema_version"} <= set(store.table_names())
    with store.session() as session:
        versions = {row.component: row.version for row in session.exec(select(SchemaVersion))}
    store.dispose()
    assert versions["engine"] == ENGINE_SCHEMA_VERSION


def test_a_newer_schema_is_refused_with_a_clear_message(state_url):
    store = StateStore(state_url)
    with store.session() as session:
        row = session.get(SchemaVersion, "engine")
        row.version = ENGINE_SCHEMA_VERSION + 1
        session.add(row)
        session.commit()
    store.dispose()
    with pytest.raises(StateError, match="newer than this reconciler knows .*upgrade reconciler"):
        StateStore(state_url)


def test_an_unreachable_database_is_one_clear_error():
    with pytest.raises(StateError, match=r"cannot open the state database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        StateStore("postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2")


def test_a_replicas_state_of_schema_1_gains_directory_digests(state_url):
    from sqlalchemy import text

    from reconciler.kinds.replicas import inventory
    from reconciler.kinds.replicas.kind import ReplicasKind

    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:  # make it look as schema 1 left it
        connection.execute(text("ALTER TABLE scanned_dirs DROP COLUMN digest"))
        connection.execute(text("INSERT INTO scanned_dirs (origin, path, mtime_ns, settled) "
                                "VALUES ('exao1', 'telem', 5, :true)"), {"true": True})
        connection.execute(text("UPDATE schema_version SET version = 1 WHERE component = 'replicas'"))
    store.dispose()

    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:
        known = inventory.known_dirs(connection, "exao1")
        version = connection.execute(text("SELECT version FROM schema_version WHERE component = 'replicas'")).scalar()
    store.dispose()
    assert version == ReplicasKind.schema_version == 5
    assert known == {b"telem": (5, True, None)}  # kept; its digest comes with the next listing


def test_a_replicas_state_of_schema_2_gains_checksums_and_the_replica_marker(state_url):
    from sqlalchemy import text

    from reconciler.kinds.replicas import inventory
    from reconciler.kinds.replicas.kind import ReplicasKind

    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:  # make it look as schema 2 left it
        connection.execute(text("DROP INDEX ix_replica_copies_replica_checked"))
        for table, column in (("origin_files", "sha256"), ("origin_files", "trimmed_at"), ("replica_copies", "sha256"),
                              ("replica_copies", "checked_at"), ("replica_copies", "corrupt_since"),
                              ("replica_status", "marker_id"), ("replica_status", "offline_since")):
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        connection.execute(text("INSERT INTO replica_status (replica) VALUES ('/mnt/backup')"))
        connection.execute(text("UPDATE schema_version SET version = 2 WHERE component = 'replicas'"))
    store.dispose()

    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:
        status = inventory.replica_status(connection, "/mnt/backup")
        version = connection.execute(text("SELECT version FROM schema_version WHERE component = 'replicas'")).scalar()
    store.dispose()
    assert version == ReplicasKind.schema_version
    assert (status.marker_id, status.offline_since) == (None, None)  # written by the next copy


def _replicas_state_as_left_by(state_url: str, version: int, statements: list[str], read):
    """A replicas state made now, then changed by ``statements`` to look as schema ``version``
    left it, opened again (which upgrades it): (the schema version then, ``read(connection)``)."""
    from sqlalchemy import text

    from reconciler.kinds.replicas.kind import ReplicasKind

    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:
        for statement in [*statements, f"UPDATE schema_version SET version = {version} WHERE component = 'replicas'"]:
            connection.execute(text(statement))
    store.dispose()
    store = StateStore(state_url, [ReplicasKind()])
    with store.engine.begin() as connection:
        found = read(connection)
        upgraded = connection.execute(text("SELECT version FROM schema_version WHERE component = 'replicas'")).scalar()
    store.dispose()
    return upgraded, found


def test_a_replicas_state_of_schema_3_gains_the_device_identity_beside_the_marker(state_url):
    from reconciler.kinds.replicas import inventory
    from reconciler.kinds.replicas.kind import ReplicasKind

    version, status = _replicas_state_as_left_by(state_url, 3, [
        "ALTER TABLE replica_status DROP COLUMN device",
        "INSERT INTO replica_status (replica, marker_id) VALUES ('/mnt/backup', 'abc')",
    ], lambda connection: inventory.replica_status(connection, "/mnt/backup"))
    assert version == ReplicasKind.schema_version
    assert (status.marker_id, status.device) == ("abc", None)  # recorded by the next run that sees the marker


def test_a_replicas_state_of_schema_4_gains_the_counted_totals_uncounted(state_url):
    from reconciler.kinds.replicas import inventory
    from reconciler.kinds.replicas.kind import ReplicasKind

    dropped = [f"ALTER TABLE {table} DROP COLUMN {column}" for table, column in (
        ("origin_status", "live_files"), ("origin_status", "live_bytes"), ("origin_status", "counted_generation"),
        ("replica_status", "copies_generation"), ("replica_status", "held_files"),
        ("replica_status", "held_bytes"), ("replica_status", "held_generation"))]
    version, (replica, origin) = _replicas_state_as_left_by(state_url, 4, [
        *dropped,
        "INSERT INTO replica_status (replica) VALUES ('/mnt/backup')",
        "INSERT INTO origin_status (origin, generation) VALUES ('src', 3)",
    ], lambda connection: (inventory.replica_status(connection, "/mnt/backup"),
                           inventory.origin_status(connection, "src")))
    assert version == ReplicasKind.schema_version == 5
    assert (replica.copies_generation, replica.held_files, replica.held_generation) == (0, None, None)
    # (counted by the next run that records the history)
    assert (origin.generation, origin.live_files, origin.counted_generation) == (3, None, None)


_OPEN_WHEN_TOLD = """
import sys
from reconciler.engine.registry import load_kinds
from reconciler.state.store import StateStore
kinds = load_kinds()
print("ready", flush=True)
sys.stdin.readline()
StateStore(sys.argv[1], kinds).dispose()
print("opened", flush=True)
"""


def test_first_runs_started_at_once_on_a_new_state_each_succeed(state_url):
    # Every kind's tables, so creating them takes long enough to overlap; all processes are
    # loaded and waiting first, then told to go together.
    processes = [subprocess.Popen([sys.executable, "-c", _OPEN_WHEN_TOLD, state_url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
                 for _ in range(8)]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = [process.communicate(timeout=120) for process in processes]
    assert [(process.returncode, err) for process, (_out, err) in zip(processes, results, strict=True)] == [(0, "")] * 8
    store = StateStore(state_url)
    assert {"journal", "locks", "runs", "schema_version"} <= set(store.table_names())
    store.dispose()


def test_an_engine_state_of_schema_1_gains_the_lock_of_each_run(state_url):
    from sqlalchemy import text

    store = StateStore(state_url)
    with store.engine.begin() as connection:  # make it look as schema 1 left it
        connection.execute(text("ALTER TABLE runs DROP COLUMN lock_id"))
        connection.execute(text("INSERT INTO runs (run_id, plan_id, operation, who, started_at, status) "
                                "VALUES ('r1', 'p1', 'apply', 'ops@here', '2026-11-30 10:00:00', 'succeeded')"))
        connection.execute(text("UPDATE schema_version SET version = 1 WHERE component = 'engine'"))
    store.dispose()

    store = StateStore(state_url)
    with store.engine.begin() as connection:
        rows = connection.execute(text("SELECT run_id, status, lock_id FROM runs")).all()
        version = connection.execute(text("SELECT version FROM schema_version WHERE component = 'engine'")).scalar()
    store.dispose()
    assert version == ENGINE_SCHEMA_VERSION == 3
    assert [tuple(row) for row in rows] == [("r1", "succeeded", None)]


def test_an_engine_state_of_schema_2_lets_one_run_hold_several_locks(state_url):
    from sqlalchemy import text

    store = StateStore(state_url)
    with store.engine.begin() as connection:  # make it look as schema 2 left it: one row per lock id
        connection.execute(text("DROP INDEX ix_locks_lock_id"))
        connection.execute(text("CREATE UNIQUE INDEX ix_locks_lock_id ON locks (lock_id)"))
        connection.execute(text("UPDATE schema_version SET version = 2 WHERE component = 'engine'"))
    store.dispose()

    store = StateStore(state_url)
    with store.engine.begin() as connection:
        for name in ("apply#shared#L1", "replica:/mnt/backup"):
            connection.execute(text("INSERT INTO locks (name, lock_id, who, host, pid, operation, created_at) "
                                    "VALUES (:name, 'L1', 'ops@exao1', 'exao1', 1, 'reconcile', "
                                    "'2026-11-30 10:00:00')"), {"name": name})
        version = connection.execute(text("SELECT version FROM schema_version WHERE component = 'engine'")).scalar()
    store.dispose()
    assert version == ENGINE_SCHEMA_VERSION == 3

"""The state database: created on first use, versioned, and refusing unknown futures."""

from __future__ import annotations

import pytest
from sqlmodel import select

from reconciler.errors import StateError
from reconciler.state.store import StateStore
from reconciler.state.tables import ENGINE_SCHEMA_VERSION, SchemaVersion


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
    assert version == ReplicasKind.schema_version == 3
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
    assert version == 3
    assert (status.marker_id, status.offline_since) == (None, None)  # written by the next copy

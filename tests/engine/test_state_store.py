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

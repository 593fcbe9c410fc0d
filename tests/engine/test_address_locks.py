"""Locks per address (PostgreSQL) and the single lock (SQLite), within one process: two runs'
lock sessions are two connections, as two hosts' runs would be."""

from __future__ import annotations

import hashlib

import pytest
from sqlmodel import select

from reconciler.errors import LockError
from reconciler.state import guards, lock
from reconciler.state.store import StateStore
from reconciler.state.tables import LockRecord

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store


@pytest.fixture
def store(state_url):
    opened = StateStore(state_url)
    yield opened
    opened.dispose()


def test_advisory_keys_are_stable_signed_64_bit_numbers():
    key = guards.advisory_key("replica:/mnt/backup")
    assert key == guards.advisory_key("replica:/mnt/backup") != guards.advisory_key("replica:/mnt/other")
    assert -(2**63) <= key < 2**63
    # the first 8 bytes of sha256("reconciler:<address>"), signed: the same on every host and version
    digest = hashlib.sha256(b"reconciler:replica:/mnt/backup").digest()
    assert key == int.from_bytes(digest[:8], "big", signed=True)


def test_on_sqlite_a_run_holds_the_whole_state(store):
    if not store.is_sqlite:
        pytest.skip("the SQLite variant")
    with lock.run_locks(store, "reconcile") as first:
        assert not first.per_address and first.cover({"replica:a": True}) is False
        with pytest.raises(LockError, match="the state database is locked by .* still running"), \
                lock.run_locks(store, "reconcile"):
            pass


def test_on_postgresql_runs_with_disjoint_addresses_proceed_at_once(store):
    if store.is_sqlite:
        pytest.skip("the PostgreSQL variant")
    with lock.run_locks(store, "reconcile") as first, lock.run_locks(store, "reconcile") as second:
        assert first.per_address and second.per_address and first.lock_id != second.lock_id
        first.mark()
        second.mark()
        assert first.cover({"replica:a": True, "origin:o": False}) is False
        assert second.cover({"replica:b": True, "origin:o": False}) is False  # origin:o shared by both
        with store.session() as session:
            names = sorted(row.name for row in session.exec(select(LockRecord)))
        assert names == sorted(["replica:a", "replica:b", f"apply#shared#{first.lock_id}",
                                f"apply#shared#{second.lock_id}", f"origin:o#shared#{first.lock_id}",
                                f"origin:o#shared#{second.lock_id}"])
        with pytest.raises(LockError, match=r"replica:a is locked by .*\(pid \d+, reconcile since .*still running"):
            second.cover({"replica:a": True})
        with pytest.raises(LockError, match=r"origin:o is locked by"):  # a trim of o waits for the copies
            second.cover({"origin:o": True})
    with store.session() as session:
        assert list(session.exec(select(LockRecord))) == []


def test_on_postgresql_a_whole_state_command_waits_for_every_run_and_they_for_it(store):
    if store.is_sqlite:
        pytest.skip("the PostgreSQL variant")
    with lock.run_locks(store, "reconcile") as run, \
            pytest.raises(LockError, match=rf"locked by .*lock {run.lock_id}\), which is still running"):
        lock.acquire(store, "backups restore")
    with lock.held(store, "backups restore") as whole, \
            pytest.raises(LockError, match=rf"locked by .*backups restore since .*lock {whole.lock_id}"), \
            lock.run_locks(store, "reconcile"):
        pass


def test_on_postgresql_a_run_after_another_acted_on_its_address_plans_again(store):
    if store.is_sqlite:
        pytest.skip("the PostgreSQL variant")
    from reconciler.engine.actions import Action
    from reconciler.state.journal import Journal

    with lock.run_locks(store, "reconcile") as waiting:
        waiting.mark()  # begins to plan...
        with lock.run_locks(store, "reconcile") as other:  # ...while another run copies to replica:a
            other.cover({"replica:a": True})
            journal = Journal(store, "plan-1", "reconcile", other.lock_id)
            action = Action.create(address="replica:a", kind="copy", reason="test", facts={})
            journal.finished(journal.started(action), "succeeded")
            journal.close("succeeded")
        assert waiting.cover({"replica:a": True}) is True  # what it saw may be stale: plan again
        assert waiting.cover({"replica:a": True}) is False  # held now: the new plan stands


def test_on_postgresql_a_run_lock_session_asks_the_server_to_notice_a_vanished_host(store):
    if store.is_sqlite:
        pytest.skip("the PostgreSQL variant")
    from sqlalchemy import text

    with lock.run_locks(store, "reconcile") as run:
        assert run.session is not None and run.session.connection is not None
        settings = [run.session.connection.execute(text(f"SHOW {name}")).scalar()
                    for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")]
    assert settings == ["60", "10", "6"]  # docs/locks.md: a vanished host's locks are free within ~2 minutes


def test_on_postgresql_force_unlock_refuses_a_live_run_and_clears_a_dead_ones_rows(store):
    if store.is_sqlite:
        pytest.skip("the PostgreSQL variant")
    with lock.run_locks(store, "reconcile") as run:
        run.cover({"replica:a": True})
        with pytest.raises(LockError, match=rf"lock {run.lock_id} is held by .*which is still running"):
            lock.force_unlock(store, run.lock_id)
        assert run.session is not None
        run.session.release()  # as when its process dies: the server drops its locks, its rows stay
        assert lock.force_unlock(store, run.lock_id).lock_id == run.lock_id
        with store.session() as session:
            assert list(session.exec(select(LockRecord))) == []

"""The report's history in the state: figures recorded once per measuring time, thinned to one
per day once old, nothing kept past a year and a bit; a state made before the table existed
gains it when opened. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from reconciler.engine import history
from reconciler.engine.report import Measure
from reconciler.state.store import StateStore
from reconciler.state.tables import ENGINE_SCHEMA_VERSION

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store


def test_figures_are_kept_once_thinned_when_old_and_dropped_when_very_old(state_url):
    store = StateStore(state_url)
    try:
        now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        # every 6 hours for 500 days, for two addresses
        for step in range(500 * 4):
            at = now - timedelta(hours=6 * step)
            history.record(store, [Measure("origin:a", "bytes", step, at), Measure("replica:/r", "bytes", step, at)],
                           "plan", now=now)
        kept = history.read_history(store, "origin", "bytes")["origin:a"]
        recent = [at for at, _ in kept if at >= now - history.RECENT]
        old = [at for at, _ in kept if at < now - history.RECENT]
        assert len(recent) == 9  # every figure of the last two days (both ends included)
        assert len({at.date() for at in old}) == len(old)  # one per day before that
        assert min(at for at, _ in kept) >= now - history.OLDEST
        assert 395 <= len(old) <= 400
        assert history.count(store) == 2 * len(kept)
        # the same figure recorded again (a run that did not rescan) is not added twice
        assert history.record(store, [Measure("origin:a", "bytes", 0, now)], "apply", now=now) == 0
        assert list(history.read_history(store, "replica", "bytes")) == ["replica:/r"]
        assert history.read_history(store, "origin", "files") == {}
    finally:
        store.dispose()


def test_a_state_made_before_the_history_gains_its_table_when_opened(state_url):
    store = StateStore(state_url)
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE measurements"))
    store.dispose()
    store = StateStore(state_url)
    try:
        assert "measurements" in store.table_names()
        with store.engine.connect() as connection:
            version = connection.execute(text("SELECT version FROM schema_version WHERE component = 'engine'")).scalar()
        assert version == ENGINE_SCHEMA_VERSION
        assert history.record(store, [Measure("origin:a", "files", 3, datetime.now(UTC))], "plan") == 1
    finally:
        store.dispose()


class _Failing:
    name, address_prefix = "broken", "broken"

    def measure(self, desired, ctx):
        raise OSError("no such file system")


class _Working:
    name, address_prefix = "fine", "fine"

    def measure(self, desired, ctx):
        now = datetime.now(UTC)
        return [Measure("fine:up", "bytes", 1, now), Measure("fine:down", "bytes", 2, now)]


def test_figures_of_addresses_not_observed_and_of_failing_kinds_are_left_out():
    found = history.measure_all([_Failing(), _Working()], None, None, failed={"fine:down"})
    assert [item.address for item in found] == ["fine:up"]
    assert history.measure_all([_Working()], None, None, failed={"fine:*"}) == []

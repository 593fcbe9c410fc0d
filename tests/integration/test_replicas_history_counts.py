"""The report's history of origins and replicas reuses the totals it counted while nothing changed
(kinds/replicas/report.py): every figure a run records is still what a count over the inventory
gives at that moment, after copies, new files, drift, trims and forgetting alike."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from reconciler.state.store import StateStore
from tests.integration.conftest import make_tree
from tests.integration.test_replicas_integrity import _trim_site

LIVE = ("SELECT origin, COUNT(*), COALESCE(SUM(size), 0) FROM origin_files WHERE gone_since IS NULL "
        "AND NOT from_replica AND trimmed_at IS NULL GROUP BY origin")
HELD = "SELECT replica, COUNT(*), COALESCE(SUM(size), 0) FROM replica_copies GROUP BY replica"


def _sql(site, statement: str) -> list[tuple]:
    store = StateStore(site.state_url, [])
    try:
        with store.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement))]
    finally:
        store.dispose()


def _recorded(site) -> dict[tuple[str, str], float]:
    """The newest recorded value of each address and metric (files and bytes only)."""
    rows = _sql(site, "SELECT address, metric, value FROM measurements WHERE metric IN ('files', 'bytes') "
                      "ORDER BY id")
    return {(address, metric): value for address, metric, value in rows}


def _counted(site) -> dict[tuple[str, str], float]:
    """The same figures counted over the inventory now."""
    found: dict[tuple[str, str], float] = {}
    for origin, files, size in _sql(site, LIVE):
        found[(f"origin:{origin}", "files")], found[(f"origin:{origin}", "bytes")] = files, size
    for replica, files, size in _sql(site, HELD):
        found[(f"replica:{replica}", "files")], found[(f"replica:{replica}", "bytes")] = files, size
    return found


def _kept(site) -> tuple[list[tuple], list[tuple]]:
    """Whether each origin's and replica's kept count stands (its generation is the current one)."""
    return (_sql(site, "SELECT origin, counted_generation = generation FROM origin_status ORDER BY origin"),
            _sql(site, "SELECT replica, held_generation = copies_generation FROM replica_status ORDER BY replica"))


def _assert_true(site) -> None:
    recorded, counted = _recorded(site), _counted(site)
    assert {key: recorded.get(key) for key in counted} == counted


@pytest.mark.state_store
def test_recorded_figures_are_the_inventory_counts_after_every_kind_of_change(site):
    make_tree(site.root / "origin", {"a/1.bin": b"1" * 100, "a/2.bin": b"2" * 200})
    (site.root / "replica").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\nsettle = "1s"\n\n[replicas."replica"]\n')
    assert site.cli("apply", "--auto-approve").code == 0
    _assert_true(site)
    assert _counted(site)[("replica:replica", "files")] == 2

    # Nothing changed: the kept counts are reused, and still what a count gives.
    assert site.cli("plan", "--detailed-exitcode").code == 0
    assert _kept(site) == ([("exao1", 1)], [("replica", 1)])
    before = _sql(site, "SELECT COUNT(*) FROM measurements")[0][0]
    assert site.cli("plan", "--detailed-exitcode").code == 0
    assert _sql(site, "SELECT COUNT(*) FROM measurements")[0][0] > before  # recorded again, as before
    _assert_true(site)

    # A new file at the origin: the origin's count is made again; the replica's still stands.
    make_tree(site.root / "origin", {"b/3.bin": b"3" * 4000})
    assert site.cli("plan").code == 0
    _assert_true(site)
    assert _recorded(site)[("origin:exao1", "bytes")] == 4300
    assert _kept(site)[1] == [("replica", 1)]

    # Copied: the replica's copies changed, so its count is made again.
    assert site.cli("apply", "--auto-approve").code == 0
    _assert_true(site)
    assert _recorded(site)[("replica:replica", "files")] == 3

    # A copy lost on the replica, and runs that may verify it: the figures follow the records.
    (site.root / "replica/exao1/a/1.bin").unlink()
    site.cli("plan", "--full-scan")
    _assert_true(site)
    assert site.cli("apply", "--auto-approve", "--full-scan").code == 0
    _assert_true(site)

    # Files gone from the origin.
    (site.root / "origin/b/3.bin").unlink()
    assert site.cli("plan").code in (0, 2)
    _assert_true(site)
    assert _recorded(site)[("origin:exao1", "files")] == 2


@pytest.mark.state_store
def test_a_trim_and_forgetting_a_replica_outdate_the_kept_counts(site):
    _trim_site(site)
    assert site.cli("reconcile").code == 0  # copies made and verified
    assert site.cli("plan").code in (0, 2)
    _assert_true(site)
    live = _recorded(site)[("origin:exao1", "files")]
    assert live == 3
    assert site.cli("reconcile", "--allow-destroy").code == 0  # trims old/x.bin and old/y.bin
    assert not (site.root / "origin/old/x.bin").exists()
    assert site.cli("plan").code in (0, 2)
    _assert_true(site)
    assert _recorded(site)[("origin:exao1", "files")] == 1  # the two trimmed files are no longer counted

    assert site.cli("replicas", "forget", "replica:b", "--origin", "exao1", "--allow-destroy").code == 0
    assert site.cli("plan").code in (0, 2)
    _assert_true(site)

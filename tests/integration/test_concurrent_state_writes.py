"""Several hosts writing one state at once lose no update: real concurrent transactions (one
connection per thread, all released together by a barrier) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from reconciler.kinds.replicas import inventory
from reconciler.kinds.replicas.kind import ReplicasKind
from reconciler.state.store import StateStore

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store

WRITERS = 6


def _at_once(store: StateStore, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(index)`` in WRITERS threads released together; the errors they raised."""
    barrier = threading.Barrier(WRITERS, timeout=120)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return errors


def test_folds_of_one_origin_from_several_hosts_at_once_lose_no_update(state_url):
    store = StateStore(state_url, kinds=[ReplicasKind()])

    def fold(index: int) -> None:  # each "host" found one new file of the same origin
        scan_id = inventory.new_scan_id()
        with store.engine.begin() as connection:
            inventory.load_paths(connection, scan_id, [(f"telem/f{index}.bin", 10 + index, 1000 + index)])
            inventory.apply_origin_scan(connection, "exao1", scan_id, [], full=False)
        with store.engine.begin() as connection:
            inventory.drop_scan(connection, scan_id)

    assert _at_once(store, fold) == []
    with store.engine.begin() as connection:
        files = connection.execute(text("SELECT COUNT(*) FROM origin_files WHERE origin = 'exao1'")).scalar()
        generation = inventory.origin_status(connection, "exao1").generation
    store.dispose()
    assert files == WRITERS
    assert generation == WRITERS  # every fold changed the inventory: every one bumped it


def test_replica_status_rows_written_by_several_hosts_at_once_never_collide(state_url):
    store = StateStore(state_url, kinds=[ReplicasKind()])
    stamp = inventory.now_utc()

    def write(index: int) -> None:  # the first write of a new row, by every host at once
        with store.engine.begin() as connection:
            inventory.set_replica_fields(connection, "/mnt/backup", marker_id=f"m{index}")
            inventory.touch_replica(connection, "/mnt/backup", sync=stamp)
            inventory.set_pair_complete(connection, "/mnt/backup", "exao1", index)

    assert _at_once(store, write) == []
    with store.engine.begin() as connection:
        status = inventory.replica_status(connection, "/mnt/backup")
        complete = inventory.pair_complete_generation(connection, "/mnt/backup", "exao1")
    store.dispose()
    assert status.marker_id in {f"m{index}" for index in range(WRITERS)}
    assert status.last_sync is not None and 0 <= complete < WRITERS

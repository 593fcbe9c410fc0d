"""A scrub of any size (issue #22): ``inventory verify`` stages the copies to read in the state's
scratch table and reads them back in blocks, never all in memory. Real files, the real CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from reconciler.kinds.replicas import inventory
from tests.integration.conftest import make_tree
from tests.integration.test_replicas_integrity import _checksum_config, _replace_keeping_size_and_mtime, _sql


@pytest.mark.state_store
def test_staged_scrub_reads_corrupt_first_then_oldest_within_the_budget_in_blocks(site):
    make_tree(site.root / "origin", {f"telem/f{index:02d}.bin": bytes([65 + index]) * 100 for index in range(7)})
    (site.root / "backup").mkdir()
    site.write(_checksum_config())
    assert site.cli("reconcile").code == 0
    _sql(site, "UPDATE replica_copies SET checked_at = '2020-01-01 00:00:00.000000' WHERE file_id IN "
               "(SELECT id FROM origin_files WHERE path = 'telem/f05.bin')")
    _replace_keeping_size_and_mtime(site.root / "backup/exao1/telem/f03.bin", b"x" * 100)
    _sql(site, "UPDATE replica_copies SET checked_at = NULL, corrupt_since = '2020-01-02 00:00:00.000000' "
               "WHERE file_id IN (SELECT id FROM origin_files WHERE path = 'telem/f03.bin')")
    engine = create_engine(site.state_url)
    try:
        with engine.begin() as connection:
            staged = inventory.stage_scrub(connection, "backup", "exao1", inventory.now_utc(), 450)
        assert (staged.copies, staged.bytes, staged.corrupt, staged.due, staged.due_bytes) == (4, 400, 1, 7, 700)
        blocks = list(inventory.staged_paths(engine, staged.scan_id, block=3))
        assert [len(block) for block in blocks] == [3, 1]
        assert blocks[0][:2] == ["telem/f03.bin", "telem/f05.bin"]  # corrupt, then verified longest ago
        with engine.begin() as connection:
            inventory.drop_scan(connection, staged.scan_id)
            assert connection.execute(text("SELECT COUNT(*) FROM scan_entries")).scalar() == 0
    finally:
        engine.dispose()
    result = site.cli("inventory", "verify")
    assert result.code == 0, result.err
    assert "read 7 copies (700 bytes): 7 verified, 1 corrupt and repaired" in result.out, result.out
    assert (site.root / "backup/exao1/telem/f03.bin").read_bytes() == b"D" * 100
    assert _sql(site, "SELECT COUNT(*) FROM scan_entries")[0][0] == 0

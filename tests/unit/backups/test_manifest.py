"""The backup manifest: written without pydantic, read (validated) with it, and the same text as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.kinds.backups.catalog import read_manifest
from tests.conftest import REPO

WRITTEN_BEFORE = REPO / "tests" / "data" / "backups" / "manifest-v1-pydantic.json"


def test_a_manifest_written_by_the_pydantic_version_reads_and_writes_back_unchanged(tmp_path: Path) -> None:
    """tests/data/backups/manifest-v1-pydantic.json was written by the earlier pydantic model
    (model_dump_json(indent=2)): every backup on disk has that form."""
    manifest = read_manifest(WRITTEN_BEFORE)
    assert manifest.summary() == ("2,505 documents in 1 collection, 1 time-series collection (3 buckets), 1 view, "
                                  "7 oplog entries, skipped meteor.gone (dropped during the dump)")
    assert manifest.started_at.utcoffset() is not None and manifest.started_at.microsecond == 716778
    assert manifest.to_json() == WRITTEN_BEFORE.read_text(encoding="utf-8")


@pytest.mark.parametrize("change, reason", [
    ('"documents": 2505', "documents"),
    ('"started_at": "2026-11-30T16:29:41.716778Z"', "started_at"),
    ('"backup_id": "cs-20261130T162941Z",', "backup_id"),
])
def test_a_manifest_that_does_not_validate_is_unreadable_with_its_reason(tmp_path: Path, change: str,
                                                                        reason: str) -> None:
    text = WRITTEN_BEFORE.read_text(encoding="utf-8")
    assert change in text
    broken = tmp_path / "cs-1.manifest.json"
    key = change.split(":")[0]
    broken.write_text(text.replace(change, f'{key}: "not a number or date"' if reason != "backup_id" else ""))
    with pytest.raises(ValueError, match="unreadable manifest") as raised:
        read_manifest(broken)
    assert str(broken) in str(raised.value)


def test_the_dump_path_loads_neither_pydantic_nor_sqlmodel_nor_sh() -> None:
    """Importing the dump (what a scheduled dump process runs) stays light: issue 21's start-up target."""
    probe = ("import sys, reconciler.kinds.backups.dump\n"
             "print('HEAVY', [m for m in ('pydantic', 'sqlmodel', 'sqlalchemy', 'sh', 'click', 'jinja2')"
             " if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, check=False)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout

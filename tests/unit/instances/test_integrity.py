"""The merge stages' integrity helpers (providers/cryosparc/integrity.py), pure parts."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.providers.cryosparc import integrity


def test_the_digest_ignores_ids_and_order_and_sees_any_change():
    aware = datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC)
    records = [{"uid": "W1", "project_uid": "P3", "created_at": aware}, {"uid": "W2", "project_uid": "P3"}]
    stored = [{"_id": "x", "uid": "W2", "project_uid": "P3"},
              {"_id": "y", "uid": "W1", "project_uid": "P3", "created_at": aware.replace(tzinfo=None)}]
    assert integrity.documents_digest(records, []) == integrity.documents_digest(stored, [])
    assert integrity.documents_digest(records, []) != integrity.documents_digest(records[:1], [])
    assert integrity.documents_digest(records, []) != integrity.documents_digest(
        [{**records[0], "project_uid": "P4"}, records[1]], [])
    assert integrity.documents_digest(records, []) != integrity.documents_digest([], records)


def test_compare_names_counts_off_by_the_stage_and_new_dangling_references_only():
    before = integrity.Census({"projects": 2, "workspaces": 3, "jobs": 5, "users": 3},
                              frozenset({"jobs J9: project_uid P9"}))
    good = integrity.Census({"projects": 3, "workspaces": 4, "jobs": 7, "users": 3},
                            frozenset({"jobs J9: project_uid P9"}))
    assert integrity.compare(before, good, {"projects": 1, "workspaces": 1, "jobs": 2}) == []
    bad = integrity.Census({"projects": 3, "workspaces": 4, "jobs": 6, "users": 3},
                           frozenset({"jobs J9: project_uid P9", "projects P3: owner_user_id u1"}))
    assert integrity.compare(before, bad, {"projects": 1, "workspaces": 1, "jobs": 2}) == [
        "jobs: 5 -> 6 documents, expected 7", "dangling projects P3: owner_user_id u1"]

"""``reconciler replicas forget`` (issue #22): the state drops a retired or lost replica's
records, destructive for the state only. Real files, the real rsync; no mocks."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conftest import make_tree, tree
from tests.integration.test_replicas_integrity import OLD, TRIM, _sql


def _snapshot(root) -> dict[str, tuple[bytes, int]]:
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, root)] = (stream.read(), os.stat(path).st_mtime_ns)
    return found


@pytest.mark.state_store
def test_a_lost_replica_forgotten_stops_counting_for_trim_until_its_replacement_is_verified(site):
    make_tree(site.root / "origin", {"old/x.bin": b"x" * 100, "old/y.bin": b"y" * 100}, age_seconds=OLD)
    for name in ("a", "b"):
        (site.root / name).mkdir()
    site.write(TRIM.format(a_extra="", b_extra=""))
    assert site.cli("reconcile").code == 0  # copies made and verified on a and b
    assert "- trim (destructive): remove 2 files" in site.cli("plan").out

    # b's disk is lost; an empty replacement is mounted in its place: an error, never filled.
    shutil.rmtree(site.root / "b")
    (site.root / "b").mkdir()
    plan = site.cli("plan")
    assert plan.code == 1 and "holds no replica marker" in plan.out, plan.out
    origin_before = _snapshot(site.root / "origin")
    a_before = _snapshot(site.root / "a")

    # Without --allow-destroy: says what it would forget, changes nothing, exit 2.
    result = site.cli("replicas", "forget", "b")
    assert result.code == 2, result.out + result.err
    assert "Would forget replica:b: 2 copies (200 B) of exao1" in result.out, result.out
    assert "--allow-destroy" in result.err
    assert _sql(site, "SELECT COUNT(*) FROM replica_copies WHERE replica = 'b'")[0][0] == 2

    result = site.cli("replicas", "forget", "replica:b", "--allow-destroy")
    assert result.code == 0, result.err
    assert "Forgot replica:b: 2 copies (200 B) of exao1; 1 completeness record; its status (marker id" in result.out
    assert "No file was touched." in result.out
    assert "still in the config" in result.err
    assert _sql(site, "SELECT COUNT(*) FROM replica_copies WHERE replica = 'b'")[0][0] == 0
    assert _sql(site, "SELECT COUNT(*) FROM replica_status WHERE replica = 'b'")[0][0] == 0
    assert _sql(site, "SELECT COUNT(*) FROM replica_copies WHERE replica = 'a'")[0][0] == 2
    assert _snapshot(site.root / "origin") == origin_before and _snapshot(site.root / "a") == a_before

    # b is a new replica now: copied to, and no trim while only a's copies are proven.
    plan = site.cli("plan")
    assert plan.code == 0, plan.out
    assert "copy" in plan.out and "- trim" not in plan.out, plan.out
    assert site.cli("reconcile", "--allow-destroy").code == 0  # copies and verifies b; trims nothing yet
    assert (site.root / "origin/old/x.bin").exists()
    assert tree(site.root / "b/exao1") == tree(site.root / "a/exao1")
    # with b's copies verified again, the trim counts them
    assert "- trim (destructive): remove 2 files" in site.cli("plan").out


def test_a_forgotten_removable_replica_stops_warning_as_stale(site):
    make_tree(site.root / "origin", {"telem/a.bin": "alpha"})
    (site.root / "disk").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."disk"]\nremovable = true\nstale_after = "14d"\n')
    assert site.cli("reconcile").code == 0
    shutil.move(site.root / "disk", site.root / "drawer")
    assert site.cli("plan", "--detailed-exitcode").code == 0
    _sql(site, "UPDATE replica_status SET offline_since = :t WHERE replica = 'disk'",
         t=datetime.now(UTC) - timedelta(days=15))
    assert site.cli("plan", "--detailed-exitcode").code == 2  # stale: a warning
    # retired: out of the config and forgotten
    site.write('[origins.exao1]\nroot = "origin"\n')
    result = site.cli("replicas", "forget", "disk", "--allow-destroy")
    assert result.code == 0 and "Forgot replica:disk: 1 copies" in result.out, result.out
    assert "still in the config" not in result.err
    assert site.cli("plan", "--detailed-exitcode").code == 0
    assert _sql(site, "SELECT COUNT(*) FROM replica_status")[0][0] == 0
    assert (site.root / "drawer/exao1/telem/a.bin").read_text() == "alpha"  # never touched


def test_forget_one_origin_only_and_an_unknown_replica(site):
    make_tree(site.root / "one", {"a.bin": "a"})
    make_tree(site.root / "two", {"b.bin": "b", "c.bin": "c"})
    (site.root / "backup").mkdir()
    site.write('[origins.one]\nroot = "one"\n\n[origins.two]\nroot = "two"\n\n[replicas."backup"]\n')
    assert site.cli("reconcile").code == 0
    result = site.cli("replicas", "forget", "backup", "--origin", "two", "--allow-destroy")
    assert result.code == 0, result.err
    assert "Forgot replica:backup (origin two): 2 copies (2 B) of two; " in result.out, result.out
    assert "status" not in result.out and "copies origin two's files to it again" in result.err
    rows = _sql(site, "SELECT f.origin FROM replica_copies c JOIN origin_files f ON f.id = c.file_id")
    assert rows == [("one",)]
    assert _sql(site, "SELECT marker_id FROM replica_status")[0][0] is not None  # the marker stays known
    result = site.cli("replicas", "forget", "elsewhere", "--allow-destroy")
    assert result.code == 1 and "the state records nothing of replica elsewhere" in result.err, result.err
    assert "Traceback" not in result.err
    # the next run copies two's files again (rsync finds them there) and records them
    assert site.cli("reconcile").code == 0
    assert _sql(site, "SELECT COUNT(*) FROM replica_copies")[0][0] == 3


def test_forget_warns_when_it_drops_the_only_copy_of_a_file_gone_from_its_origin(site):
    make_tree(site.root / "origin", {"a.bin": "a", "b.bin": "b"})
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n')
    assert site.cli("reconcile").code == 0
    (site.root / "origin/a.bin").unlink()
    assert site.cli("reconcile").code == 0  # a.bin is gone from the origin, its copy stays
    result = site.cli("replicas", "forget", "backup", "--allow-destroy")
    assert result.code == 0
    assert "Warning: 1 files gone from, trimmed from or never seen on their origin had their only recorded " \
           "copy there" in result.err, result.err
    assert (site.root / "backup/exao1/a.bin").read_text() == "a"

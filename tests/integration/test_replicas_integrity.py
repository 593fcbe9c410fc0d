"""Replica integrity (issue #22): removable replicas and the replica marker, content checksums,
the scrub. Real files, the real rsync (and a real sshd where said); no mocks."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from tests.integration.conftest import make_tree, tree

FILES = {"telem/a.bin": "alpha", "rawimages/cam1/b.fits": b"\x00" * 3000}


def _sql(site, statement: str, **parameters):
    engine = create_engine(site.state_url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), parameters)
            return [tuple(row) for row in result] if result.returns_rows else None
    finally:
        engine.dispose()


def _marker(path) -> str:
    return (path / ".reconciler-replica").read_text().split()[1]


# --- 1. removable replicas and the marker ------------------------------------------------------

REMOVABLE = """\
[origins.exao1]
root = "origin"

[replicas."disk"]
removable = true
stale_after = "14d"
"""


def test_removable_replica_absent_then_empty_mount_point_then_back(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "disk").mkdir()
    site.write(REMOVABLE)
    assert site.cli("reconcile").code == 0
    disk = site.root / "disk"
    assert tree(disk / "exao1") == tree(site.root / "origin")
    recorded = _sql(site, "SELECT marker_id FROM replica_status WHERE replica = 'disk'")[0][0]
    assert recorded and _marker(disk) == recorded  # the first apply wrote the marker

    # Unplugged: the root is absent. Offline, a note, not an error; nothing is created.
    shutil.move(disk, site.root / "unplugged")
    make_tree(site.root / "origin", {"telem/c.bin": "gamma"})
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err
    assert "replica:disk: offline since" in plan.out and "stale_after = 2w" in plan.out
    assert "No changes. Everything matches" not in plan.out
    listing = site.cli("replicas", "list")
    assert "offline since" in listing.out, listing.out
    assert site.cli("reconcile").code == 0
    assert not disk.exists()

    # A mount point without its disk: an empty directory, no marker. Still offline, never filled.
    disk.mkdir()
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0 and "offline since" in plan.out and "no replica marker" in plan.out, plan.out
    assert "copy" not in plan.out
    assert site.cli("reconcile").code == 0
    assert os.listdir(disk) == []

    # The disk is back: the next run catches up.
    disk.rmdir()
    shutil.move(site.root / "unplugged", disk)
    plan = site.cli("plan")
    assert "1 files new on origin exao1" in plan.out and "offline" not in plan.out, plan.out
    assert site.cli("reconcile").code == 0
    assert tree(disk / "exao1") == tree(site.root / "origin")
    assert _sql(site, "SELECT offline_since FROM replica_status WHERE replica = 'disk'")[0][0] is None
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_removable_replica_offline_past_stale_after_is_a_warning_that_exits_2(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "disk").mkdir()
    site.write(REMOVABLE)
    assert site.cli("reconcile").code == 0
    shutil.rmtree(site.root / "disk")
    assert site.cli("plan", "--detailed-exitcode").code == 0  # offline, within stale_after
    long_ago = datetime.now(timezone.utc) - timedelta(days=15)
    _sql(site, "UPDATE replica_status SET offline_since = :t WHERE replica = 'disk'", t=long_ago)
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2, plan.out
    assert "Warnings:" in plan.out and "longer than stale_after = 2w" in plan.out
    assert "No changes to make now, but some addresses need attention" in plan.out
    assert site.cli("plan").code == 0  # a plain plan is not an error
    result = site.cli("reconcile")
    assert result.code == 2 and "longer than stale_after" in result.err, result.err
    saved = json.loads(site.cli("plan", "--format", "json").out)
    assert saved["warnings"][0]["address"] == "replica:disk"


def test_non_removable_replica_replaced_by_an_empty_directory_is_an_error_and_never_filled(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n')
    assert site.cli("reconcile").code == 0
    shutil.move(site.root / "backup", site.root / "the-disk")
    (site.root / "backup").mkdir()  # the mount point, without its disk
    make_tree(site.root / "origin", {"telem/c.bin": "gamma"})
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 1
    assert "replica:backup:" in plan.out and "holds no replica marker .reconciler-replica" in plan.out, plan.out
    result = site.cli("reconcile")
    assert result.code == 1 and "is its disk unmounted?" in result.err
    assert os.listdir(site.root / "backup") == []  # nothing copied
    assert "Traceback" not in result.err


def test_another_replicas_disk_mounted_in_its_place_is_an_error(site):
    make_tree(site.root / "origin", FILES)
    for name in ("a", "b"):
        (site.root / name).mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."a"]\n\n[replicas."b"]\n')
    assert site.cli("reconcile").code == 0
    shutil.copy(site.root / "b/.reconciler-replica", site.root / "a/.reconciler-replica")
    plan = site.cli("plan")
    assert plan.code == 1 and "holds the marker of another replica" in plan.out


def test_a_replica_known_before_markers_is_marked_and_an_empty_one_is_not_adopted(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n')
    assert site.cli("reconcile").code == 0
    # As a state made before markers: nothing recorded, no marker file.
    (site.root / "backup/.reconciler-replica").unlink()
    _sql(site, "UPDATE replica_status SET marker_id = NULL")
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2 and "+ mark: .reconciler-replica" in plan.out, plan.out
    assert site.cli("reconcile").code == 0
    assert _marker(site.root / "backup") == _sql(site, "SELECT marker_id FROM replica_status")[0][0]
    # Same again, but the directory is empty: a mount point, not the replica.
    (site.root / "backup/.reconciler-replica").unlink()
    _sql(site, "UPDATE replica_status SET marker_id = NULL")
    shutil.rmtree(site.root / "backup/exao1")
    plan = site.cli("plan")
    assert plan.code == 1 and "is empty although the state records copies there" in plan.out, plan.out
    assert os.listdir(site.root / "backup") == []


def test_removable_ssh_replica_absent_is_offline(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "remote").mkdir()
    url = sshd.url(site.root / "remote")
    site.write(f'[origins.exao1]\nroot = "origin"\n\n[replicas."{url}"]\nremovable = true\n\n' + sshd.toml())
    assert site.cli("reconcile").code == 0
    recorded = _sql(site, "SELECT marker_id FROM replica_status")[0][0]
    assert _marker(site.root / "remote") == recorded
    shutil.move(site.root / "remote", site.root / "unplugged")
    (site.root / "remote").mkdir()
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0 and "offline since" in plan.out and "no replica marker" in plan.out, plan.out
    assert site.cli("reconcile").code == 0 and os.listdir(site.root / "remote") == []
    (site.root / "remote").rmdir()
    shutil.move(site.root / "unplugged", site.root / "remote")
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0 and "offline" not in plan.out, plan.out


def test_a_replayed_plan_never_hides_an_offline_replica(site):
    if not site.state_url.startswith("sqlite"):
        pytest.skip("the no-change memo is kept only with a SQLite state")
    make_tree(site.root / "origin", FILES)
    (site.root / "disk").mkdir()
    site.write(REMOVABLE.replace('root = "origin"', 'root = "origin"\nimmutable = true'))
    assert site.cli("reconcile").code == 0
    assert site.cli("plan").out.startswith("No changes.")  # leaves a memo
    assert "converged: nothing to do (nothing it rests on changed" in site.run("reconcile").err  # replayed
    shutil.move(site.root / "disk", site.root / "unplugged")
    (site.root / "disk").mkdir()  # the mount point, empty
    plan = site.run("plan")
    assert "offline since" in plan.out, plan.out
    # and the marker alone removed (same directory, same device): not replayed either
    (site.root / "disk").rmdir()
    shutil.move(site.root / "unplugged", site.root / "disk")
    assert site.cli("plan").out.startswith("No changes.")
    assert "converged: nothing to do (nothing it rests on" in site.run("reconcile").err
    (site.root / "disk/.reconciler-replica").unlink()
    plan = site.run("plan")
    assert "offline since" in plan.out and "no replica marker" in plan.out, plan.out

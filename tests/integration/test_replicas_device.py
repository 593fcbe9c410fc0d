"""The device identity beside the replica marker (issue #22): a removable disk that comes back
is taken for the replica only when it holds the replica's marker *on the file system the state
recorded*; a copy of the replica (marker included) or of the marker alone on another disk is an
error naming both, never filled. Real files on two real file systems (the test directory and
/dev/shm), locally and over the real sshd; no mocks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kinds.replicas import marker
from tests.integration.conftest import make_tree, tree
from tests.integration.test_replicas_integrity import FILES, _marker, _sql


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on another file system than the test's (tmpfs /dev/shm)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm: no second file system to play another disk")
    place = Path(tempfile.mkdtemp(prefix="reconciler-other-disk-", dir="/dev/shm"))
    if marker.local_device(str(place)) == marker.local_device(str(tmp_path)):
        shutil.rmtree(place)
        pytest.skip("/dev/shm is on the test directory's file system")
    yield place
    shutil.rmtree(place, ignore_errors=True)


def _mount(mount_point: Path, disk: Path) -> None:
    """Mount ``disk`` at ``mount_point``: here a symbolic link, as the tool follows the root."""
    if mount_point.is_symlink():
        mount_point.unlink()
    mount_point.symlink_to(disk)


def _copy_of_the_replica_on_another_disk_is_refused(site, mount_point: Path, other_disk: Path) -> None:
    disk = site.root / "the-disk"
    recorded_id, recorded_device = _sql(site, "SELECT marker_id, device FROM replica_status")[0]
    assert recorded_device == marker.local_device(str(disk))
    assert f"device {recorded_device}" in (disk / ".reconciler-replica").read_text()

    # A clone of the whole replica, marker included, on another disk, mounted in its place.
    clone = other_disk / "clone"
    shutil.copytree(disk, clone, symlinks=True)
    assert _marker(clone) == recorded_id
    _mount(mount_point, clone)
    make_tree(site.root / "origin", {"telem/c.bin": "gamma"})
    plan = site.cli("plan")
    assert plan.code == 1, plan.out
    assert f"holds this replica's marker (.reconciler-replica id {recorded_id}) on another file system " \
           f"(device {marker.local_device(str(clone))}; the state records the replica on {recorded_device})" \
           in plan.out, plan.out
    result = site.cli("reconcile")
    assert result.code == 1 and "Traceback" not in result.err
    assert not (clone / "exao1/telem/c.bin").exists()  # never filled

    # A copy of the marker alone, on an empty disk: the same.
    lone = other_disk / "lone"
    lone.mkdir()
    shutil.copy(disk / ".reconciler-replica", lone / ".reconciler-replica")
    _mount(mount_point, lone)
    plan = site.cli("plan")
    assert plan.code == 1 and "on another file system" in plan.out, plan.out
    assert site.cli("reconcile").code == 1
    assert sorted(os.listdir(lone)) == [".reconciler-replica"]

    # The replica's own disk is back: caught up.
    _mount(mount_point, disk)
    assert site.cli("reconcile").code == 0
    assert (disk / "exao1/telem/c.bin").read_text() == "gamma"


def test_a_copy_of_the_replica_or_its_marker_on_another_disk_is_not_the_replica(site, other_disk):
    make_tree(site.root / "origin", FILES)
    (site.root / "the-disk").mkdir()
    mount_point = site.root / "mnt"
    _mount(mount_point, site.root / "the-disk")
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."mnt"]\nremovable = true\n')
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "the-disk/exao1") == tree(site.root / "origin")
    _copy_of_the_replica_on_another_disk_is_refused(site, mount_point, other_disk)


def test_over_ssh_a_copy_of_the_replica_on_another_disk_is_not_the_replica(site, sshd, other_disk):
    make_tree(site.root / "origin", FILES)
    (site.root / "the-disk").mkdir()
    mount_point = site.root / "mnt"
    _mount(mount_point, site.root / "the-disk")
    site.write(f'[origins.exao1]\nroot = "origin"\n\n[replicas."{sshd.url(mount_point)}"]\nremovable = true\n\n'
               + sshd.toml())
    assert site.cli("reconcile").code == 0
    _copy_of_the_replica_on_another_disk_is_refused(site, mount_point, other_disk)


def test_another_replicas_marker_names_that_replica_and_both_ids(site):
    make_tree(site.root / "origin", FILES)
    for name in ("a", "b"):
        (site.root / name).mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."a"]\n\n[replicas."b"]\n')
    assert site.cli("reconcile").code == 0
    ids = dict(_sql(site, "SELECT replica, marker_id FROM replica_status"))
    shutil.copy(site.root / "b/.reconciler-replica", site.root / "a/.reconciler-replica")
    plan = site.cli("plan")
    assert plan.code == 1
    assert f"holds the marker of replica b (.reconciler-replica id {ids['b']}; the state records id {ids['a']} " \
           "for this replica)" in plan.out, plan.out


@pytest.mark.state_store
def test_a_state_without_a_device_identity_records_it_at_the_next_run(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n')
    assert site.cli("reconcile").code == 0
    _sql(site, "UPDATE replica_status SET device = NULL")  # as a state of schema 3 left it
    assert site.cli("plan").code == 0
    assert _sql(site, "SELECT device FROM replica_status")[0][0] == marker.local_device(str(site.root / "backup"))

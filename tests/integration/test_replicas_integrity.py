"""Replica integrity (issue #22): removable replicas and the replica marker, content checksums,
the scrub. Real files, the real rsync (and a real sshd where said); no mocks."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta

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
    long_ago = datetime.now(UTC) - timedelta(days=15)
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
    assert plan.code == 1 and "holds the marker of replica b" in plan.out


@pytest.mark.state_store
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


# --- 2. content checksums ------------------------------------------------------------------------

CHECKSUM = """\
[origins.exao1]
root = "origin"
checksum = "sha256"
{origin_extra}
[replicas."backup"]
{replica_extra}"""


def _checksum_config(origin_extra: str = "", replica_extra: str = "") -> str:
    return CHECKSUM.format(origin_extra=origin_extra, replica_extra=replica_extra)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _replace_keeping_size_and_mtime(path, content: bytes) -> None:
    """New content of the same size, the mtime put back (os.utime): invisible to size/mtime."""
    before = path.stat()
    assert len(content) == before.st_size
    path.write_bytes(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.state_store
def test_copies_are_hashed_and_recorded_verified_and_origins_are_hashed_once(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config(origin_extra="immutable = true"))
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    history = site.cli("history").out
    assert "2 verified by sha256" in history, history
    hashes = dict(_sql(site, "SELECT path, sha256 FROM origin_files"))
    assert hashes == {"telem/a.bin": _sha256(b"alpha"), "rawimages/cam1/b.fits": _sha256(b"\x00" * 3000)}
    copies = _sql(site, "SELECT sha256, checked_at, corrupt_since FROM replica_copies")
    assert all(digest in hashes.values() and checked and corrupt is None for digest, checked, corrupt in copies)
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert (rows[0]["verified"], rows[0]["unverified"], rows[0]["corrupt"], rows[0]["lost"]) == (2, 0, 0, 0)

    # An immutable file is never hashed again: new content of the same size and mtime on the
    # origin is not read by a plan with nothing to do (its recorded hash stays the old one).
    _replace_keeping_size_and_mtime(site.root / "origin/telem/a.bin", b"ALPHA")
    assert site.cli("plan", "--detailed-exitcode", "--full-scan").code == 0
    assert dict(_sql(site, "SELECT path, sha256 FROM origin_files"))["telem/a.bin"] == _sha256(b"alpha")

    # A changed size/mtime means hash again.
    make_tree(site.root / "origin", {"telem/a.bin": "alpha, longer now"})
    assert site.cli("reconcile", "--full-scan").code == 0
    assert dict(_sql(site, "SELECT path, sha256 FROM origin_files"))["telem/a.bin"] == _sha256(b"alpha, longer now")
    assert (site.root / "backup/exao1/telem/a.bin").read_bytes() == b"alpha, longer now"
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_a_copy_that_never_matches_the_origin_hash_is_reported_and_recorded_corrupt(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config())
    assert site.cli("reconcile").code == 0
    # The origin file changes in place without its size or mtime changing: its recorded hash
    # is now wrong, so a new replica's copy never matches it, even copied a second time.
    _replace_keeping_size_and_mtime(site.root / "origin/telem/a.bin", b"ALPHA")
    (site.root / "second").mkdir()
    site.write(_checksum_config(replica_extra='\n[replicas."second"]\n'))
    result = site.cli("reconcile")
    assert result.code == 1
    assert "1 copies differ from the origin (sha256) even after copying them again (e.g. telem/a.bin)" in result.err
    rows = {row["address"]: row for row in json.loads(site.cli("replicas", "list", "--json").out)}
    assert rows["replica:second"]["corrupt"] == 1 and rows["replica:second"]["verified"] == 1


def test_checksums_over_ssh_hash_on_the_hosts_in_a_few_calls(site, sshd):
    files = {f"telem/f{index:02d}.bin": f"file {index}" for index in range(30)}
    make_tree(site.root / "origin", files)
    (site.root / "remote").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\nchecksum = "sha256"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\n\n'
               + sshd.toml() + "share_connections = false\n")
    before = sshd.logins()
    result = site.cli("reconcile")
    assert result.code == 0, result.out + result.err
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")
    assert "30 verified by sha256" in site.cli("history").out
    # every login is a separate ssh call: a handful per run, not one per file
    assert sshd.logins() - before < 12
    hashes = dict(_sql(site, "SELECT path, sha256 FROM origin_files"))
    assert hashes["telem/f07.bin"] == _sha256(b"file 7")


def test_sha256sum_missing_on_an_ssh_host_is_a_one_line_error(site, tmp_path):
    from tests.integration.conftest import sshd_or_skip

    tools = tmp_path / "tools"
    tools.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for name in os.listdir(directory):
            if name != "sha256sum" and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(directory, name))
    home = tmp_path / "sshd"
    home.mkdir()
    with sshd_or_skip(home, f"SetEnv PATH={tools}\n") as server:
        make_tree(site.root / "origin", FILES)
        (site.root / "backup").mkdir()
        site.write(f'[origins.exao1]\nroot = "{server.url(site.root / "origin")}"\nchecksum = "sha256"\n\n'
                   '[replicas."backup"]\n\n' + server.toml())
        result = site.cli("reconcile")
    assert result.code == 1
    assert 'sha256sum is not installed on root@127.0.0.1' in result.out + result.err or \
        "sha256sum is not installed on" in result.out + result.err, result.out + result.err
    assert "install coreutils on that host" in result.out + result.err
    assert "Traceback" not in result.err
    assert not (site.root / "backup/exao1").exists()  # nothing copied without its hash


# --- 3. the scrub --------------------------------------------------------------------------------

SCRUB_FILES = {"telem/a.bin": b"a" * 1000, "telem/b.bin": b"b" * 1000, "telem/c.bin": b"c" * 1000}


def _age_checks(site, days: int = 91) -> None:
    """Make every verification ``days`` old, as if that much time had passed."""
    _sql(site, "UPDATE replica_copies SET checked_at = :t", t=datetime.now(UTC) - timedelta(days=days))


@pytest.mark.state_store
def test_scrub_finds_flipped_truncated_and_same_size_same_mtime_copies_and_repairs_them(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config(replica_extra='scrub_every = "90d"\n'))
    assert site.cli("reconcile").code == 0
    copies = site.root / "backup/exao1/telem"
    # a flipped byte, a truncation, a replacement of the same size and mtime
    data = bytearray((copies / "a.bin").read_bytes())
    data[500] ^= 0x01
    _replace_keeping_size_and_mtime(copies / "a.bin", bytes(data))
    stat = (copies / "b.bin").stat()
    os.truncate(copies / "b.bin", 10)
    os.utime(copies / "b.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _replace_keeping_size_and_mtime(copies / "c.bin", b"x" * 1000)
    assert site.cli("plan", "--detailed-exitcode").code == 0  # not due yet: nothing re-read
    _age_checks(site)
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2 and "+ scrub: re-read 3 copies of origin exao1" in plan.out, plan.out
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert "3 verified, 3 corrupt and repaired" in site.cli("history").out
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_scrub_repairs_from_another_replica_when_the_origin_lost_the_file(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    for name in ("backup", "second"):
        (site.root / name).mkdir()
    site.write(_checksum_config(replica_extra='scrub_every = "90d"\n\n[replicas."second"]\n'))
    assert site.cli("reconcile").code == 0
    (site.root / "origin/telem/a.bin").unlink()
    _replace_keeping_size_and_mtime(site.root / "backup/exao1/telem/a.bin", b"z" * 1000)
    _sql(site, "UPDATE replica_copies SET checked_at = :t WHERE replica = 'backup'",
         t=datetime.now(UTC) - timedelta(days=91))
    result = site.cli("reconcile")
    assert result.code == 0, result.out + result.err
    assert (site.root / "backup/exao1/telem/a.bin").read_bytes() == b"a" * 1000
    assert "(1 from another replica)" in site.cli("history").out


def test_a_file_with_no_good_copy_anywhere_is_lost_an_error_never_silent(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config(replica_extra='scrub_every = "90d"\n'))
    assert site.cli("reconcile").code == 0
    (site.root / "origin/telem/a.bin").unlink()
    _replace_keeping_size_and_mtime(site.root / "backup/exao1/telem/a.bin", b"z" * 1000)
    _age_checks(site)
    result = site.cli("reconcile")
    assert result.code == 1
    assert "corrupt and could not be repaired (e.g. telem/a.bin)" in result.out + result.err
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 1
    assert "1 files of origin exao1 are lost: gone from the origin and every copy is corrupt (e.g. telem/a.bin)" \
        in plan.out, plan.out
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert rows[0]["lost"] == 1 and rows[0]["corrupt"] == 1


def test_the_scrub_budget_limits_what_one_run_reads(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config(replica_extra='scrub_every = "90d"\nscrub_budget = "1500B"\n'))
    assert site.cli("reconcile").code == 0
    _age_checks(site)
    plan = site.cli("plan")
    assert "re-read 1 copies of origin exao1 (1000 B" in plan.out or "re-read 1 copies of origin exao1" in plan.out
    assert "2 more due later (scrub_budget)" in plan.out, plan.out
    for _ in range(3):
        assert site.cli("reconcile").code == 0
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_the_no_change_memo_lasts_only_until_the_next_scrub_falls_due(site):
    if not site.state_url.startswith("sqlite"):
        pytest.skip("the no-change memo is kept only with a SQLite state")
    make_tree(site.root / "origin", SCRUB_FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config(origin_extra='immutable = true\nfull_scan_every = "1000d"',
                                replica_extra='scrub_every = "90d"\nverify_every = "1000d"\n'))
    assert site.cli("reconcile").code == 0
    assert site.cli("plan").out.startswith("No changes.")
    oldest = _sql(site, "SELECT MIN(checked_at) FROM replica_copies")[0][0]
    oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=UTC)
    valid_until = _sql(site, "SELECT valid_until FROM memos")[0][0]
    assert abs(valid_until - (oldest + timedelta(days=90)).timestamp()) < 1
    # with copies not verified yet (e.g. checksums just turned on), no memo at all
    _sql(site, "UPDATE replica_copies SET checked_at = NULL")
    assert site.cli("plan").code == 0
    assert _sql(site, "SELECT COUNT(*) FROM memos")[0][0] == 0


# --- 4. commands -----------------------------------------------------------------------------------


@pytest.mark.state_store
def test_inventory_verify_where_and_lost(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    for name in ("backup", "second"):
        (site.root / name).mkdir()
    site.write(_checksum_config(replica_extra='\n[replicas."second"]\n'))
    assert site.cli("reconcile").code == 0
    where = site.cli("inventory", "where", "telem/a.bin")
    assert where.code == 0
    assert "exao1:telem/a.bin" in where.out and "on the origin: present" in where.out
    assert "replica:backup: verified" in where.out and "replica:second: verified" in where.out

    # verify now (no scrub_every configured): a flipped byte is found and repaired
    _replace_keeping_size_and_mtime(site.root / "second/exao1/telem/b.bin", b"B" * 1000)
    result = site.cli("inventory", "verify", "--replica", "second")
    assert result.code == 0, result.out + result.err
    assert "read 3 copies (3,000 bytes): 3 verified, 1 corrupt and repaired" in result.out
    assert (site.root / "second/exao1/telem/b.bin").read_bytes() == b"b" * 1000
    # the budget: one copy per call
    result = site.cli("inventory", "verify", "--replica", "backup", "--budget", "1000")
    assert "read 1 copies" in result.out, result.out

    assert site.cli("inventory", "lost").code == 0
    (site.root / "origin/telem/c.bin").unlink()
    for name in ("backup", "second"):
        _replace_keeping_size_and_mtime(site.root / name / "exao1/telem/c.bin", b"z" * 1000)
    assert site.cli("plan").code == 0  # the origin scan marks c.bin gone
    result = site.cli("inventory", "verify")
    assert result.code == 1 and "could not be repaired" in result.err, result.out + result.err
    lost = site.cli("inventory", "lost")
    assert lost.code == 1 and "exao1:telem/c.bin" in lost.out
    where = site.cli("inventory", "where", "telem/c.bin")
    assert "on the origin: gone since" in where.out and where.out.count("corrupt since") == 2
    rows = {row["address"]: row for row in json.loads(site.cli("replicas", "list", "--json").out)}
    assert rows["replica:backup"]["lost"] == 1 and rows["replica:second"]["corrupt"] == 1
    assert "1 lost" in site.cli("replicas", "list").out


def test_scrub_every_needs_sha256_checksums_on_the_replicas_origins(site):
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\nscrub_every = "90d"\n')
    result = site.cli("validate")
    assert result.code == 1
    assert 'scrub_every on replica \'backup\' needs checksum = "sha256" on origin \'exao1\'' in result.err, result.err
    assert result.err.count("\n") == 1  # one line


# --- 5. trim (numcopies) ---------------------------------------------------------------------------

TRIM = """\
[origins.exao1]
root = "origin"
checksum = "sha256"
trim = {{ min_copies = 2, older_than = "30d" }}

[replicas."a"]
scrub_every = "90d"
{a_extra}
[replicas."b"]
scrub_every = "90d"
{b_extra}"""

OLD = 40 * 86400  # seconds: older than older_than


def _trim_site(site, a_extra: str = "", b_extra: str = "") -> None:
    make_tree(site.root / "origin", {"old/x.bin": b"x" * 100, "old/y.bin": b"y" * 100}, age_seconds=OLD)
    make_tree(site.root / "origin", {"new/z.bin": b"z" * 100})
    for name in ("a", "b"):
        (site.root / name).mkdir()
    site.write(TRIM.format(a_extra=a_extra, b_extra=b_extra))


@pytest.mark.state_store
def test_trim_removes_old_files_with_two_verified_copies_only_with_allow_destroy(site):
    _trim_site(site)
    assert site.cli("reconcile").code == 0  # copies made and verified
    result = site.cli("reconcile")
    assert result.code == 2, result.err  # the trim waits for --allow-destroy
    assert "Pending destructive" in result.err and "origin:exao1 (trim)" in result.err
    assert (site.root / "origin/old/x.bin").exists()
    plan = site.cli("plan")
    assert "- trim (destructive): remove 2 files older than" in plan.out, plan.out
    assert "Destructive (need --allow-destroy): origin:exao1 (trim)." in plan.out
    result = site.cli("reconcile", "--allow-destroy")
    assert result.code == 0, result.err
    assert not (site.root / "origin/old/x.bin").exists() and not (site.root / "origin/old/y.bin").exists()
    assert (site.root / "origin/new/z.bin").exists()  # not old enough
    for name in ("a", "b"):
        assert (site.root / name / "exao1/old/x.bin").read_bytes() == b"x" * 100
    # trimmed, not gone: the next scans keep it so, and nothing is copied or lost
    assert site.cli("plan", "--detailed-exitcode", "--full-scan").code == 0
    where = site.cli("inventory", "where", "old/x.bin")
    assert "on the origin: trimmed" in where.out, where.out
    assert _sql(site, "SELECT gone_since FROM origin_files WHERE path = 'old/x.bin'")[0][0] is None
    stats = json.loads(site.cli("inventory", "stats", "--json").out)[0]
    assert (stats["gone"], stats["trimmed"], stats["files"]) == (0, 2, 1)


@pytest.mark.state_store
def test_trim_is_refused_while_a_counted_replica_is_offline(site):
    _trim_site(site, b_extra="removable = true\n")
    assert site.cli("reconcile").code == 0
    assert "- trim (destructive)" in site.cli("plan").out
    shutil.move(site.root / "b", site.root / "unplugged")
    plan = site.cli("plan")
    assert "origin:exao1: trim refused: replica b is offline" in plan.out, plan.out
    assert "trim" not in plan.out.split("Waiting")[0]
    assert site.cli("reconcile", "--allow-destroy").code == 0
    assert (site.root / "origin/old/x.bin").exists()


def test_trim_never_counts_a_copy_that_fails_the_check_right_before_removal(site):
    _trim_site(site)
    assert site.cli("reconcile").code == 0
    # b's copy of x goes bad after its verification: only 1 proven copy of x remains
    _replace_keeping_size_and_mtime(site.root / "b/exao1/old/x.bin", b"X" * 100)
    result = site.cli("reconcile", "--allow-destroy")
    assert result.code == 1
    assert "kept 1 (e.g. old/x.bin)" in result.err, result.err
    assert (site.root / "origin/old/x.bin").read_bytes() == b"x" * 100
    assert not (site.root / "origin/old/y.bin").exists()
    # the bad copy is corrupt now; the next run repairs it from the origin, then x is trimmed
    assert site.cli("reconcile", "--allow-destroy").code == 0
    assert site.cli("reconcile", "--allow-destroy").code == 0
    assert (site.root / "b/exao1/old/x.bin").read_bytes() == b"x" * 100
    assert not (site.root / "origin/old/x.bin").exists()


def test_trim_needs_replicas_that_are_scrubbed(site):
    _trim_site(site)
    site.write(TRIM.format(a_extra="", b_extra="").replace('[replicas."b"]\nscrub_every = "90d"', '[replicas."b"]'))
    assert site.cli("reconcile").code == 0
    plan = site.cli("plan")
    assert "trim refused: only 1 replicas of origin exao1 have scrub_every" in plan.out, plan.out
    assert (site.root / "origin/old/x.bin").exists()


@pytest.mark.state_store
def test_kill_9_during_a_trim_then_run_again_nothing_removed_without_its_proven_copies(site):
    import signal

    from reconciler.state import lock
    from reconciler.state.store import StateStore
    from tests.conftest import popen_cli

    files = {f"old/f{index:05d}.bin": os.urandom(1024) for index in range(6000)}
    make_tree(site.root / "origin", files, age_seconds=OLD)
    for name in ("a", "b"):
        (site.root / name).mkdir()
    site.write(TRIM.format(a_extra="", b_extra=""))
    assert site.cli("reconcile").code == 0  # copied and verified on both
    process = popen_cli(site.args("reconcile", "--allow-destroy"))
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len(os.listdir(site.root / "origin/old")) < len(files):
            break
        time.sleep(0.002)
    assert process.poll() is None, "the trim finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    remaining = set(os.listdir(site.root / "origin/old"))
    assert len(remaining) < len(files)
    for path, content in files.items():
        if os.path.basename(path) not in remaining:  # removed: both copies are there, intact
            assert (site.root / "a/exao1" / path).read_bytes() == content
            assert (site.root / "b/exao1" / path).read_bytes() == content
    store = StateStore(site.state_url)
    stale = lock.holder(store)
    store.dispose()
    if stale is not None:  # a lock left by the killed run (where locks do not die with their holder)
        assert site.cli("force-unlock", stale.lock_id).code == 0
    result = site.cli("reconcile", "--allow-destroy")
    assert result.code == 0, result.err
    assert os.listdir(site.root / "origin/old") == []
    assert site.cli("plan", "--detailed-exitcode", "--full-scan").code == 0
    assert _sql(site, "SELECT COUNT(*) FROM origin_files WHERE trimmed_at IS NOT NULL AND gone_since IS NULL")[0][0] \
        == len(files)
    for name in ("a", "b"):
        assert tree(site.root / name / "exao1") == {path: content for path, content in files.items()}


def test_trim_of_an_ssh_origin_checks_and_removes_over_ssh(site, sshd):
    make_tree(site.root / "origin", {"old/x y.bin": b"x" * 100, "old/-dash.bin": b"d" * 10}, age_seconds=OLD)
    for name in ("a", "b"):
        (site.root / name).mkdir()
    config = TRIM.format(a_extra="", b_extra="").replace('root = "origin"',
                                                         f'root = "{sshd.url(site.root / "origin")}"')
    site.write(config + "\n" + sshd.toml())
    assert site.cli("reconcile").code == 0
    result = site.cli("reconcile", "--allow-destroy")
    assert result.code == 0, result.out + result.err
    assert os.listdir(site.root / "origin/old") == []
    assert "removed 2 files" in site.cli("history").out
    for name in ("a", "b"):
        assert (site.root / name / "exao1/old/x y.bin").read_bytes() == b"x" * 100


@pytest.mark.state_store
def test_copies_left_unverified_by_a_killed_run_are_verified_by_the_next(site):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write(_checksum_config())
    assert site.cli("reconcile").code == 0
    # As a run killed between rsync and the hash leaves them: recorded, not verified.
    _sql(site, "UPDATE replica_copies SET checked_at = NULL, sha256 = NULL")
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2 and "2 never verified" in plan.out, plan.out
    assert site.cli("reconcile").code == 0
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert rows[0]["verified"] == 2
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_the_report_names_offline_replicas_and_lost_files(site):
    make_tree(site.root / "origin", SCRUB_FILES)
    (site.root / "disk").mkdir()
    site.write(_checksum_config().replace('[replicas."backup"]', '[replicas."disk"]\nremovable = true'))
    assert site.cli("reconcile").code == 0
    shutil.move(site.root / "disk", site.root / "unplugged")
    assert site.cli("plan").code == 0
    result = site.cli("report", "--html", str(site.root / "report.html"))
    assert result.code == 0, result.err
    html = (site.root / "report.html").read_text()
    assert "replica:disk: offline since" in html and "3 verified, 0 unverified, 0 corrupt, 0 lost" in html

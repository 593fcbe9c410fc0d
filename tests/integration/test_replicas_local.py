"""Replicas between local directories: real files, the real rsync."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import make_tree, rewrite_in_place, tree

BASIC = """\
[origins.exao1]
root = "origin"
settle = "2m"

[replicas."backup"]
"""


def _setup(site, files=None, config=BASIC):
    (site.root / "backup").mkdir(exist_ok=True)
    make_tree(site.root / "origin", files or {"telem/a.bin": "alpha", "rawimages/cam1/b.fits": b"\x00" * 3000})
    site.write(config)


@pytest.mark.state_store
def test_copies_everything_then_nothing_then_only_what_is_new(site):
    _setup(site)
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 2
    assert "+ copy: 2 files new on origin exao1" in plan.out
    assert plan.out.strip().endswith("Plan: 1 copy (2 files, 2.9 KiB).")
    assert site.cli("apply", "--auto-approve").code == 0
    assert tree(site.root / "backup" / "exao1") == tree(site.root / "origin")
    assert site.cli("plan", "--detailed-exitcode").code == 0

    make_tree(site.root / "origin", {"telem/c.bin": "gamma"})
    plan = site.cli("plan")
    assert "1 files new on origin exao1" in plan.out and "telem/c.bin" in plan.out and "a.bin" not in plan.out
    assert site.cli("reconcile").code == 0
    assert (site.root / "backup/exao1/telem/c.bin").read_text() == "gamma"


def test_a_changed_file_is_copied_again(site):
    _setup(site)
    site.cli("reconcile")
    make_tree(site.root / "origin", {"telem/a.bin": "alpha, longer now"})
    plan = site.cli("plan")
    assert "1 changed on origin exao1" in plan.out
    site.cli("reconcile")
    assert (site.root / "backup/exao1/telem/a.bin").read_text() == "alpha, longer now"


def test_files_still_being_written_wait_for_the_settle_time(site):
    _setup(site)
    make_tree(site.root / "origin", {"telem/fresh.bin": "being written"}, age_seconds=0)
    plan = site.cli("plan")
    assert "waiting: 1 files on origin exao1 changed within the settle time" in plan.out
    assert "fresh.bin" not in plan.out.split("Waiting")[0]
    site.cli("reconcile")
    assert not (site.root / "backup/exao1/telem/fresh.bin").exists()
    old = time.time() - 600
    os.utime(site.root / "origin/telem/fresh.bin", (old, old))
    site.cli("reconcile")
    assert (site.root / "backup/exao1/telem/fresh.bin").read_text() == "being written"


def test_files_gone_from_the_origin_stay_on_the_replica(site):
    _setup(site)
    site.cli("reconcile")
    (site.root / "origin/telem/a.bin").unlink()
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0
    assert (site.root / "backup/exao1/telem/a.bin").read_text() == "alpha"
    stats = json.loads(site.cli("inventory", "stats", "--json").out)
    assert stats == [{"origin": "exao1", "files": 1, "bytes": 3000, "gone": 1, "known_only_from_replica": 0,
                      "trimmed": 0,
                      "last_scan": stats[0]["last_scan"]}]


@pytest.mark.state_store
def test_a_removed_directory_marks_its_files_gone_on_the_fast_path_too(site):
    import shutil

    _setup(site, {"telem/a.bin": "a", "rawimages/cam1/b.fits": "b", "rawimages/cam2/c.fits": "c"},
           config=BASIC.replace('settle = "2m"', 'settle = "2m"\nimmutable = true'))
    site.cli("reconcile")
    site.cli("plan")  # records every directory for the fast path
    shutil.rmtree(site.root / "origin/rawimages/cam1")
    assert site.cli("plan", "--detailed-exitcode").code == 0
    stats = json.loads(site.cli("inventory", "stats", "--json").out)
    assert (stats[0]["files"], stats[0]["gone"]) == (2, 1)
    shutil.rmtree(site.root / "origin/rawimages")
    site.cli("plan")
    stats = json.loads(site.cli("inventory", "stats", "--json").out)
    assert (stats[0]["files"], stats[0]["gone"]) == (1, 2)
    assert (site.root / "backup/exao1/rawimages/cam1/b.fits").read_text() == "b"


def test_include_and_exclude_globs(site):
    _setup(site, {"telem/a.bin": "a", "telem/a.tmp": "t", "logs/x.log": "l", "other/y": "o"},
           config=BASIC.replace('settle = "2m"', 'settle = "2m"\ninclude = ["telem/**", "logs/**"]\n'
                                                  'exclude = ["**/*.tmp"]'))
    site.cli("reconcile")
    assert sorted(tree(site.root / "backup/exao1")) == ["logs/x.log", "telem/a.bin"]


def test_awkward_names_are_copied_exactly(site):
    names = {
        "with space/a b.bin": "1",
        "new\nline.bin": "2",
        "-leading-dash.bin": "3",
        "--rsync-option-lookalike": "4",
        "ünïcödé/naïve.txt": "5",
        "b64:not-really-base64": "6",
    }
    _setup(site, names)
    raw = os.fsencode(site.root / "origin") + b"/latin1-\xe9\xff.bin"
    with open(raw, "wb") as stream:
        stream.write(b"7")
    old = time.time() - 3600
    os.utime(raw, (old, old))
    assert site.cli("reconcile").code == 0
    copied = os.fsencode(site.root / "backup/exao1") + b"/latin1-\xe9\xff.bin"
    with open(copied, "rb") as stream:
        assert stream.read() == b"7"
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert site.cli("plan", "--detailed-exitcode").code == 0  # nothing re-copied: names round-trip


def test_origin_and_replica_paths_outside_ascii(site):
    # rsync must get the paths' UTF-8 bytes, whatever encoding reconciler talks to it in.
    make_tree(site.root / "données", {"raw/a.fits": "a", "raw/b.fits": "b"})
    (site.root / "备份").mkdir()
    site.write('[origins.exao1]\nroot = "données"\nsettle = "2m"\n\n[replicas."备份"]\n')
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "备份/exao1") == tree(site.root / "données")
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_large_copies_run_in_parallel_batches_and_are_recorded(site):
    files = {f"raw/day{day}/{index:04d}.fits": f"frame {index}" for day in (1, 2) for index in range(300)}
    files |= {f"odd name/-{index:04d}:x.bin": str(index) for index in range(300)}
    files |= {"logs/a.log": "log", "top.bin": "top"}
    _setup(site, files, config=BASIC + "copy_jobs = 3\ncopy_batch_files = 250\n")
    result = site.cli("apply", "--auto-approve")
    assert result.code == 0, result.err
    # 1 file alone first (it creates backup/exao1/), then 250 at a time, 3 rsyncs at once
    assert "copied 902 files (902 transferred, the rest already there) with 5 rsync runs" in result.out + result.err
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_a_big_origin_is_read_by_worker_processes_with_the_same_result(site):
    # 21,000 files: past PARALLEL_AFTER (20,000), so the rest of the tree goes to the scan pool.
    origin = site.root / "origin"
    stamp = time.time() - 3600
    for day in range(42):
        folder = origin / f"raw/day{day:02d}"
        folder.mkdir(parents=True)
        for index in range(500):
            path = folder / f"{index:04d}.fits"
            path.write_bytes(b"f" * (index % 7))
            os.utime(path, (stamp, stamp))
    _setup(site, {"top.bin": "top"}, config=BASIC.replace('settle = "2m"', 'settle = "2m"\nscan_jobs = 3'))
    plan = site.cli("plan")
    assert "21001 files new on origin exao1" in plan.out.replace(",", ""), plan.out
    assert site.cli("apply", "--auto-approve").code == 0
    assert site.cli("plan", "--detailed-exitcode").code == 0

    (origin / "raw/day07/0003.fits").write_bytes(b"longer than before")  # in place: same names
    os.utime(origin / "raw/day07/0003.fits", (stamp, stamp))
    make_tree(origin, {"raw/day42/new.fits": "new"})
    plan = site.cli("plan")
    assert "copy: 1 files new and 1 changed on origin exao1" in plan.out, plan.out
    assert "files: 2 (raw/day07/0003.fits, raw/day42/new.fits)" in plan.out
    assert site.cli("apply", "--auto-approve").code == 0
    assert tree(site.root / "backup/exao1") == tree(origin)

    # Verifying the replica reads its 21,002 files through the pool too: a deleted copy is drift.
    site.write(BASIC.replace('settle = "2m"', 'settle = "2m"\nscan_jobs = 3') + 'scan_jobs = 3\nverify_every = "1d"\n')
    (site.root / "backup/exao1/raw/day31/0444.fits").unlink()
    plan = site.cli("plan", "--full-scan")
    assert "origin exao1: 1 missing or different on the replica (drift)" in plan.out, plan.out
    assert "files: 1 (raw/day31/0444.fits)" in plan.out


@pytest.mark.state_store
def test_a_failed_batch_records_only_what_the_others_delivered(site, tmp_path, monkeypatch):
    files = {"logs/a.log": "log"} | {f"raw/day1/{index:04d}.fits": str(index) for index in range(300)}
    _setup(site, files, config=BASIC + "copy_jobs = 1\ncopy_batch_files = 100\n")
    # A fault injected in front of the real rsync: the run whose batch holds raw/day1/0150.fits
    # dies as rsync does when its connection drops (exit 12). A real rsync cannot be made to
    # fail outright for one batch and not the others here; every other run is the real one.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "rsync").write_text(
        "#!/bin/sh\n"
        'for arg; do case "$arg" in */0150.fits) echo "rsync: connection unexpectedly closed" >&2; '
        'exit 12;; esac; done\n'
        f'exec {shutil.which("rsync")} "$@"\n')
    (shim / "rsync").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    result = site.cli("apply", "--auto-approve")
    assert result.code == 1
    message = result.out + result.err
    assert "rsync failed with exit 12" in message and "connection unexpectedly closed" in message
    assert "100 of 301 files copied and recorded" in message  # the first batch; the third never started
    plan = site.cli("plan")
    assert "201 files new on origin exao1" in plan.out and "logs/a.log" not in plan.out
    monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")


def test_a_file_gone_before_rsync_reads_it_records_only_what_rsync_printed(site, tmp_path, monkeypatch):
    files = {f"raw/{index:02d}.fits": str(index) for index in range(6)}
    _setup(site, files, config=BASIC + "copy_jobs = 1\ncopy_batch_files = 2\n")
    # A file that vanishes between the plan and the copy: the shim removes raw/03.fits just
    # before the real rsync of the batch naming it starts; that rsync then exits 23 (partial
    # transfer) having printed only raw/02.fits, and only that file of the batch is recorded.
    shim = tmp_path / "bin"
    shim.mkdir()
    victim = site.root / "origin/raw/03.fits"
    (shim / "rsync").write_text(
        "#!/bin/sh\n"
        f'for arg; do case "$arg" in */03.fits) rm -f "{victim}";; esac; done\n'
        f'exec {shutil.which("rsync")} "$@"\n')
    (shim / "rsync").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    result = site.cli("apply", "--auto-approve")
    message = result.out + result.err
    assert result.code == 1, message
    assert "5 of 6 files copied; rsync exit 23" in message and "03.fits" in message
    held = json.loads(site.cli("replicas", "list", "--json").out)[0]
    assert held["files"] == 5 and held["missing_files"] == 1  # until a scan sees 03.fits gone
    assert site.cli("plan", "--detailed-exitcode").code == 0
    assert json.loads(site.cli("replicas", "list", "--json").out)[0]["missing_files"] == 0
    assert sorted(p.name for p in (site.root / "backup/exao1/raw").iterdir()) == [
        "00.fits", "01.fits", "02.fits", "04.fits", "05.fits"]


@pytest.mark.state_store
def test_fast_path_skips_unchanged_directories_only_for_immutable_origins(site):
    _setup(site)
    site.cli("reconcile")
    path = site.root / "origin/telem/a.bin"
    rewrite_in_place(path, "ALPHA", age_seconds=3000)  # the directory's mtime does not change
    # immutable = false: every file is re-read, the change is found
    assert "1 changed on origin exao1" in site.cli("plan").out

    site.write(BASIC.replace('settle = "2m"', 'settle = "2m"\nimmutable = true'))
    site.cli("reconcile")  # the first immutable run has no directory record: full scan, copies the change
    rewrite_in_place(path, "ALPHA, again", age_seconds=2000)
    assert site.cli("plan", "--detailed-exitcode").code == 0  # fast path: the directory was not re-listed
    full = site.cli("plan", "--full-scan")
    assert "1 changed on origin exao1" in full.out
    # a new file changes its directory's mtime, so the fast path still sees it
    make_tree(site.root / "origin", {"telem/new.bin": "n"})
    assert "telem/new.bin" in site.cli("plan").out


@pytest.mark.state_store
def test_enrolment_records_an_existing_backup_without_copying(site):
    _setup(site, {"telem/a.bin": "alpha", "telem/b.bin": "beta", "telem/c.bin": "gamma"})
    # an older backup made by hand: a and b already there (same size and mtime), an extra origin exao2
    backup = site.root / "backup"
    for name in ("a.bin", "b.bin"):
        target = backup / "exao1/telem" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = site.root / "origin/telem" / name
        target.write_bytes(source.read_bytes())
        os.utime(target, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    make_tree(backup / "exao2", {"old/z.bin": "from a retired machine"})
    site.write(BASIC + "import_origins = true\n")
    inode_before = (backup / "exao1/telem/a.bin").stat().st_ino

    plan = site.cli("plan")
    assert "+ enroll: 2 files already on the replica for origin exao1" in plan.out
    assert "+ enroll: 1 files already on the replica for origin exao2" in plan.out
    assert "+ copy: 1 files new on origin exao1" in plan.out and "telem/c.bin" in plan.out
    assert site.cli("apply", "--auto-approve").code == 0
    assert (backup / "exao1/telem/a.bin").stat().st_ino == inode_before  # enrolment never copies
    assert (backup / "exao1/telem/c.bin").read_text() == "gamma"
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert rows[0]["files"] == 4 and rows[0]["missing_files"] == 0
    stats = {row["origin"]: row for row in json.loads(site.cli("inventory", "stats", "--json").out)}
    assert stats["exao2"]["known_only_from_replica"] == 1
    assert site.cli("plan", "--detailed-exitcode").code == 0



def test_a_full_scan_re_lists_the_replica_even_without_verify_every(site):
    """--full-scan promises to re-read everything: a copy deleted on the replica is found by it
    (and repaired by apply --full-scan) even where verify_every is not set."""
    _setup(site)
    assert site.cli("reconcile").code == 0
    (site.root / "backup/exao1/telem/a.bin").unlink()  # someone deleted a copy
    full = site.cli("plan", "--full-scan", "--detailed-exitcode")
    assert full.code == 2 and "origin exao1: 1 missing or different on the replica (drift)" in full.out, full.out
    assert site.cli("apply", "--full-scan", "--auto-approve").code == 0
    assert (site.root / "backup/exao1/telem/a.bin").read_text() == "alpha"
    assert site.cli("plan", "--full-scan", "--detailed-exitcode").code == 0

@pytest.mark.state_store
def test_verification_finds_drift_and_repairs_it(site):
    _setup(site)
    site.write(BASIC + 'verify_every = "1s"\n')
    site.cli("reconcile")
    (site.root / "backup/exao1/telem/a.bin").unlink()  # someone deleted a copy
    time.sleep(1.1)
    plan = site.cli("plan")
    assert "origin exao1: 1 missing or different on the replica (drift)" in plan.out
    site.cli("reconcile")
    assert (site.root / "backup/exao1/telem/a.bin").read_text() == "alpha"
    time.sleep(1.1)
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_a_missing_replica_fails_alone(site):
    _setup(site)
    site.write(BASIC + '\n[replicas."/nonexistent/mount"]\n')
    result = site.cli("reconcile")
    assert result.code == 1
    assert "replica:/nonexistent/mount: /nonexistent/mount does not exist or is not a directory" in result.err
    assert "never creates a replica's root" in result.err
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")


def test_a_missing_origin_is_reported_on_its_replicas(site):
    _setup(site)
    site.write(BASIC + '\n[origins.exao2]\nroot = "/nonexistent/origin"\n')
    result = site.cli("plan")
    assert result.code == 1
    assert "replica:backup: origin exao2: /nonexistent/origin does not exist" in result.out
    assert "2 files new on origin exao1" in result.out


def test_bwlimit_caps_what_the_copies_send(site):
    # 1 MiB at 256 KiB/s in all (two rsyncs at 128 KiB/s each) cannot take less than ~3 s;
    # without the limit it takes a few milliseconds. (A lower bound: a slow machine only
    # makes it longer.)
    _setup(site, {"big/a.bin": os.urandom(1 << 19), "big/b.bin": os.urandom(1 << 19)},
           config=BASIC + 'bwlimit = "256KiB"\ncopy_batch_files = 1\n')
    started = time.monotonic()
    result = site.cli("apply", "--auto-approve")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert elapsed >= 2.0, f"1 MiB at 256 KiB/s took only {elapsed:.2f} s: the limit did not reach rsync"


def test_a_bwlimit_too_small_for_the_jobs_is_located(site):
    _setup(site, config=BASIC + "bwlimit = 1500\ncopy_jobs = 2\n")
    result = site.cli("validate")
    assert result.code == 1
    assert (":6:1: replicas.backup.bwlimit = 1500: less than 1 KiB/s for each of the copy_jobs = 2 rsync "
            "processes (rsync's smallest limit); raise it or lower copy_jobs") in result.err, result.err


def test_config_mistakes_in_replicas_are_located(site):
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."origin/inside"]\norigins = ["exao9"]\n'
               '[replicas."ftp://x/y"]\n')
    result = site.cli("validate")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert any(":4:1: replica 'origin/inside' lies inside origin 'exao1'" in line for line in lines)
    assert any(":5:1: replica 'origin/inside' names unknown origin 'exao9' (origins: exao1)" in line for line in lines)
    assert any(":6:1: unsupported URL scheme 'ftp://'" in line for line in lines)


def test_missing_rsync_is_one_clear_error(site, tmp_path):
    _setup(site)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = site.run("plan", env={"PATH": str(empty)})
    assert result.code == 1
    assert "'rsync' was not found on PATH; install it (apt-get install rsync" in (result.out + result.err)
    assert "Traceback" not in result.err


def test_a_saved_copy_plan_survives_new_arrivals_but_not_changes(site, tmp_path):
    _setup(site)
    plan_file = tmp_path / "p.json"
    site.cli("plan", "-o", str(plan_file))
    make_tree(site.root / "origin", {"telem/late.bin": "arrived after the plan"})
    applied = site.cli("apply", str(plan_file))
    assert applied.code == 0, applied.err
    assert not (site.root / "backup/exao1/telem/late.bin").exists()  # exactly the saved plan

    site.cli("plan", "-o", str(plan_file))
    make_tree(site.root / "origin", {"telem/late.bin": "rewritten after the plan!"})
    refused = site.cli("apply", str(plan_file))
    assert refused.code == 1 and "Saved plan is stale" in refused.err


@pytest.mark.state_store
def test_state_loss_never_loses_data_and_rebuilds_by_observing(site, tmp_path):
    _setup(site)
    site.cli("reconcile")
    site.state_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    plan = site.cli("plan")
    assert "2 files new on origin exao1" in plan.out  # the new state knows nothing: rsync will confirm
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")


@pytest.mark.state_store
def test_replicas_list_reports_what_is_held_and_missing(site):
    _setup(site)
    site.cli("plan")
    before = json.loads(site.cli("replicas", "list", "--json").out)[0]
    assert before["missing_files"] == 2 and before["missing_bytes"] == 3005 and before["last_sync"] is None
    site.cli("reconcile")
    after = json.loads(site.cli("replicas", "list", "--json").out)[0]
    assert after["files"] == 2 and after["bytes"] == 3005 and after["missing_files"] == 0
    assert after["url"] == str(Path(site.root / "backup")) and after["last_sync"]


@pytest.mark.state_store
def test_fast_path_finds_changes_below_unchanged_directories(site):
    _setup(site, {"telem/cam1/2026/a.bin": "a", "telem/cam2/b.bin": "b"},
           config=BASIC.replace('settle = "2m"', 'settle = "2m"\nimmutable = true'))
    site.cli("reconcile")  # records every directory
    make_tree(site.root / "origin", {"telem/cam1/2026/c.bin": "c"})  # only telem/cam1/2026 changes its mtime
    plan = site.cli("plan")
    assert "1 files new on origin exao1" in plan.out and "telem/cam1/2026/c.bin" in plan.out
    site.cli("reconcile")
    (site.root / "origin/telem/cam2/b.bin").unlink()  # a removal changes telem/cam2's mtime
    site.cli("reconcile")
    stats = json.loads(site.cli("inventory", "stats", "--json").out)[0]
    assert stats["gone"] == 1 and stats["files"] == 2
    assert (site.root / "backup/exao1/telem/cam2/b.bin").read_text() == "b"  # never deleted from the replica

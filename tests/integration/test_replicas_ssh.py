"""Replicas over ssh: a real sshd on 127.0.0.1 (started by a fixture), real ssh and rsync."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from reconciler.errors import ObserveError
from reconciler.kinds.replicas import local_walk, remote_walk
from reconciler.kinds.replicas.listing import Entry, KnownDir, make_matcher
from reconciler.kinds.replicas.local_walk import walk_local
from reconciler.kinds.replicas.remote_walk import walk_remote
from reconciler.providers.location import Location, SshSettings
from tests.integration.conftest import make_tree, rewrite_in_place, tree

FILES = {"telem/a.bin": "alpha", "rawimages/b b.fits": b"\x01" * 5000, "odd\nname": "x",
         "-dash:colon.bin": "y", "ünï/naïve.txt": "z"}


def test_ssh_origin_to_local_replica(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\n\n[replicas."backup"]\n\n' + sshd.toml())
    plan = site.cli("plan")
    assert "5 files new on origin exao1" in plan.out, plan.out + plan.err
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_local_origin_to_ssh_replica_with_verification(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "remote").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\nverify_every = "1s"\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")
    (site.root / "remote/exao1/telem/a.bin").unlink()
    time.sleep(1.1)
    plan = site.cli("plan")
    assert "1 missing or different on the replica (drift)" in plan.out, plan.out
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")


def test_ssh_origin_to_ssh_replica_runs_rsync_on_the_origin_host(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "remote").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")


def test_bwlimit_caps_a_pull_from_an_ssh_origin(site, sshd):
    # rsync forwards --bwlimit to the sending side on the origin host: 1 MiB at 256 KiB/s
    # cannot arrive in less than ~3 s (a lower bound: a slow machine only makes it longer).
    make_tree(site.root / "origin", {"a.bin": os.urandom(1 << 20)})
    (site.root / "backup").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\n\n'
               '[replicas."backup"]\nbwlimit = "256KiB"\ncopy_jobs = 1\n\n' + sshd.toml())
    started = time.monotonic()
    result = site.cli("reconcile")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert elapsed >= 2.0, f"1 MiB at 256 KiB/s arrived in {elapsed:.2f} s: the limit did not reach rsync"


def test_enrolment_from_an_ssh_replica(site, sshd):
    make_tree(site.root / "remote/exao3", {"2019/old.dat": "archived long ago"})
    make_tree(site.root / "origin", {"a": "1"})
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\nimport_origins = true\n\n' + sshd.toml())
    plan = site.cli("plan")
    assert "+ enroll: 1 files already on the replica for origin exao3" in plan.out, plan.out + plan.err
    assert site.cli("reconcile").code == 0
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert rows[0]["files"] == 2


def test_an_unreachable_host_fails_only_its_address(site, sshd):
    make_tree(site.root / "origin", {"a": "1"})
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n\n'
               '[replicas."ssh://127.0.0.1:1/nowhere"]\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 1
    assert "replica:ssh://127.0.0.1:1/nowhere: cannot reach 127.0.0.1 over ssh" in result.err
    assert (site.root / "backup/exao1/a").read_text() == "1"


def test_an_unreachable_origin_is_one_clean_error(site, sshd):
    (site.root / "backup").mkdir()
    site.write('[origins.exao9]\nroot = "ssh://127.0.0.1:1/opt/MagAOX"\n\n[replicas."backup"]\n\n' + sshd.toml())
    result = site.cli("plan")
    assert result.code == 1
    assert "replica:backup: origin exao9: cannot reach 127.0.0.1 over ssh" in result.out, result.out
    assert result.err == "", result.err  # no traceback from a thread after the error


def test_a_missing_remote_directory_is_reported(site, sshd):
    make_tree(site.root / "origin", {"a": "1"})
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "not-mounted")}"]\n\n' + sshd.toml())
    result = site.cli("plan")
    assert result.code == 1
    assert "not-mounted does not exist or is not a directory; create or mount it" in result.out


def test_fast_path_over_ssh_reads_only_changed_directories(site, sshd):
    awkward = {"-d ir/a": "1", "new\nline/b": "2", os.fsdecode(b"\xff raw/c"): "3", "deep/er/d": "4"}
    make_tree(site.root / "origin", {"telem/a.bin": "alpha", **awkward})
    (site.root / "backup").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\nimmutable = true\n\n'
               '[replicas."backup"]\n\n' + sshd.toml())
    assert site.cli("reconcile").code == 0  # no directory recorded yet: one full listing
    rewrite_in_place(site.root / "origin/telem/a.bin", "ALPHA", age_seconds=3000)  # its directory's mtime stays
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err  # fast path: telem/ was not read again
    assert "1 changed on origin exao1" in site.cli("plan", "--full-scan").out

    # New files change their directories' mtimes: each is read again, whatever its name.
    make_tree(site.root / "origin", {name + ".new": "n" for name in awkward} | {"deep/er/est/e": "5"})
    plan = site.cli("plan")
    # (the change the full scan found is in the inventory now, and still to copy)
    assert "5 files new and 1 changed on origin exao1" in plan.out, plan.out + plan.err
    assert site.cli("reconcile").code == 0
    copied = tree(site.root / "backup/exao1")
    assert {name: copied[name] for name in awkward} == {name: value.encode() for name, value in awkward.items()}
    assert all(copied[name + ".new"] == b"n" for name in awkward) and copied["deep/er/est/e"] == b"5"

    shutil.rmtree(site.root / "origin/deep")  # a vanished directory marks its files gone on the fast path too
    assert site.cli("reconcile").code == 0
    stats = json.loads(site.cli("inventory", "stats", "--json").out)[0]
    assert stats["gone"] == 3, stats
    assert (site.root / "backup/exao1/deep/er/est/e").read_bytes() == b"5"  # never deleted from the replica


def test_a_directory_vanishing_between_the_fast_paths_two_listings_fails_the_listing(sshd, tmp_path):
    make_tree(tmp_path / "origin", {"x/a": "1"})
    root_mtime = (tmp_path / "origin").stat().st_mtime_ns
    settings = SshSettings(identity_file=str(sshd.identity), options=tuple(sshd.options), connect_timeout=5)
    known = {b"": KnownDir(root_mtime, True, None)}  # the root is as recorded, x/ is new: x/ is read second
    entries = walk_remote(Location.parse(sshd.url(tmp_path / "origin")), settings, None, 2**62, known, fast=True)
    # find's output to a pipe is written when it exits, so the directories are all listed by now
    assert next(entries) == Entry("s", b"", 0, root_mtime, True, None)
    shutil.rmtree(tmp_path / "origin/x")
    with pytest.raises(ObserveError, match=r"find: '\./x': No such file or directory; run again"):
        list(entries)


def _listing(entries):
    return sorted(entries, key=lambda entry: (entry.entry_type, entry.path))


def _known(entries):
    return {entry.path: KnownDir(entry.mtime_ns, entry.settled, entry.digest)
            for entry in entries if entry.entry_type != "f"}


@pytest.mark.parametrize("big_dirs", [False, True], ids=["held", "streamed"])
def test_the_remote_walk_yields_what_the_local_walk_yields(sshd, tmp_path, monkeypatch, big_dirs):
    if big_dirs:  # directories of more than two files are streamed, without digests, by both walks
        monkeypatch.setattr(local_walk, "BUFFERED_FILES", 2)
        monkeypatch.setattr(remote_walk, "BUFFERED_FILES", 2)
    root = tmp_path / "origin"
    make_tree(root, {"telem/a.bin": "a", "telem/b.bin": "bb", "telem/c.tmp": "skipped", "-d ir/x": "1",
                     "new\nline/y": "2", os.fsdecode(b"\xff raw/z"): "3", "deep/er/est/w": "4", "top": "t",
                     ".rsync-partial/half": "never listed", "deep/.rsync-partial/half": "nor this"})
    (root / "empty").mkdir()
    make_tree(root, {"telem/fresh.bin": "still being written"}, age_seconds=0)
    settings = SshSettings(identity_file=str(sshd.identity), options=tuple(sshd.options), connect_timeout=5)
    location = Location.parse(sshd.url(root))
    matcher = make_matcher([], ["**/*.tmp"])
    cutoff = time.time_ns() - 60 * 10**9

    def both(known, fast=False):
        local = _listing(walk_local(str(root), matcher, cutoff, known, fast=fast))
        remote = _listing(walk_remote(location, settings, matcher, cutoff, known, fast=fast))
        assert remote == local
        return local

    first = both({})
    assert {entry.path for entry in first if entry.entry_type == "f"} == {
        b"telem/a.bin", b"telem/b.bin", b"telem/fresh.bin", b"-d ir/x", b"new\nline/y", b"\xff raw/z",
        b"deep/er/est/w", b"top"}
    assert [entry.settled for entry in first if entry.path == b"telem" and entry.entry_type == "d"] == [False]
    assert both(None) == _listing(walk_local(str(root), matcher, cutoff, None))  # a replica's listing
    unchanged = both(_known(first))
    if not big_dirs:
        assert {entry.entry_type for entry in unchanged} == {"u"}  # no file is yielded again
    make_tree(root, {"-d ir/x": "changed", "deep/er/new": "n"})
    both(_known(unchanged))
    fast = both(_known(unchanged), fast=True)
    # skipped: all but deep/er (a new file) and telem (a file not settled); "-d ir/x" was changed in
    # place, which leaves its directory's mtime as it was (why immutable = true is a promise)
    assert {entry.path for entry in fast if entry.entry_type == "s"} == {
        b"", b"-d ir", b"new\nline", b"\xff raw", b"empty", b"deep", b"deep/er/est"}

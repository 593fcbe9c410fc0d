"""Listing an origin (real files in a temporary directory): which directories are
folded in again and which are recognised, by their files' digest, as unchanged."""

from __future__ import annotations

import os

from reconciler.kinds.replicas.listing import KnownDir
from reconciler.kinds.replicas.local_walk import walk_local

OLD = 1_600_000_000 * 10**9  # long settled
CUTOFF = 1_700_000_000 * 10**9


def _file(path, data: bytes, mtime_ns: int = OLD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _walk(root, known=None, fast=False, matcher=None):
    return list(walk_local(str(root), matcher, CUTOFF, known, fast=fast))


def _known(entries):
    return {entry.path: KnownDir(entry.mtime_ns, entry.settled, entry.digest)
            for entry in entries if entry.entry_type != "f"}


def _files(entries):
    return sorted(entry.path for entry in entries if entry.entry_type == "f")


def _types(entries):
    return {entry.path: entry.entry_type for entry in entries if entry.entry_type != "f"}


def test_an_unchanged_directory_is_recognised_and_its_files_not_yielded(tmp_path):
    _file(tmp_path / "a/one.bin", b"1")
    _file(tmp_path / "a/two.bin", b"22")
    _file(tmp_path / "b/three.bin", b"333")
    first = _walk(tmp_path, known={})
    assert _files(first) == [b"a/one.bin", b"a/two.bin", b"b/three.bin"]
    assert _types(first) == {b"": "d", b"a": "d", b"b": "d"}
    assert all(entry.digest for entry in first if entry.entry_type == "d")

    again = _walk(tmp_path, known=_known(first))
    assert _files(again) == []
    assert _types(again) == {b"": "u", b"a": "u", b"b": "u"}


def test_any_change_to_a_file_makes_its_directory_listed_again(tmp_path):
    _file(tmp_path / "a/one.bin", b"1")
    _file(tmp_path / "a/two.bin", b"22")
    _file(tmp_path / "b/three.bin", b"333")
    known = _known(_walk(tmp_path, known={}))
    directory_mtime = os.stat(tmp_path / "a").st_mtime_ns

    _file(tmp_path / "a/one.bin", b"1", mtime_ns=OLD + 1)  # only the mtime, by a nanosecond
    os.utime(tmp_path / "a", ns=(directory_mtime, directory_mtime))
    changed = _walk(tmp_path, known=known)
    assert _files(changed) == [b"a/one.bin", b"a/two.bin"]
    assert _types(changed) == {b"": "u", b"a": "d", b"b": "u"}

    known = _known(changed)
    _file(tmp_path / "a/two.bin", b"XY")  # same size, same mtime, other bytes: not a change by the rule
    assert _types(_walk(tmp_path, known=known))[b"a"] == "u"
    (tmp_path / "a/two.bin").unlink()
    assert _files(_walk(tmp_path, known=known)) == [b"a/one.bin"]


def test_excluded_files_do_not_count_and_a_new_exclusion_relists(tmp_path):
    _file(tmp_path / "a/keep.bin", b"1")
    _file(tmp_path / "a/skip.tmp", b"2")
    everything = _walk(tmp_path, known={})
    only_bin = _walk(tmp_path, known=_known(everything), matcher=lambda path: not path.endswith(b".tmp"))
    assert _files(only_bin) == [b"a/keep.bin"] and _types(only_bin)[b"a"] == "d"


def test_an_unsettled_directory_is_marked_but_still_recognised(tmp_path):
    _file(tmp_path / "a/fresh.bin", b"1", mtime_ns=CUTOFF + 10)
    first = _walk(tmp_path, known={})
    assert [entry.settled for entry in first if entry.path == b"a"] == [False]
    again = _walk(tmp_path, known=_known(first))
    assert [(entry.entry_type, entry.settled) for entry in again if entry.path == b"a"] == [("u", False)]


def test_the_fast_path_reads_no_settled_directory_whose_mtime_is_unchanged(tmp_path):
    _file(tmp_path / "a/one.bin", b"1")
    known = _known(_walk(tmp_path, known={}))
    mtime = os.stat(tmp_path / "a").st_mtime_ns
    _file(tmp_path / "a/one.bin", b"2", mtime_ns=OLD + 5)  # in place: the directory's mtime stays
    os.utime(tmp_path / "a", ns=(mtime, mtime))
    fast = _walk(tmp_path, known=known, fast=True)
    assert _types(fast) == {b"": "s", b"a": "s"} and _files(fast) == []
    assert [entry.digest for entry in fast if entry.path == b"a"] == [known[b"a"].digest]
    assert _types(_walk(tmp_path, known=known))[b"a"] == "d"  # a full scan finds it


def test_a_replica_listing_yields_every_file_and_computes_no_digest(tmp_path):
    _file(tmp_path / "a/one.bin", b"1")
    listing = _walk(tmp_path, known=None)
    assert _files(listing) == [b"a/one.bin"]
    assert all(entry.digest is None for entry in listing)


# --- the pool: a big tree's rest is read by forked workers --------------------------------------
# parallel_after=0 sends everything below the root to the pool, so small trees exercise it.


def _tree(root, dirs: int = 6, files: int = 4) -> None:
    for index in range(dirs):
        for number in range(files):
            _file(root / f"d{index}" / f"sub{index % 2}" / f"f{number}.bin", b"x" * number)
        _file(root / f"d{index}" / "top.bin", b"t" * index)
    _file(root / "root.bin", b"r")


def _pooled(root, known=None, fast=False, matcher=None):
    return list(walk_local(str(root), matcher, CUTOFF, known, fast=fast, jobs=2, parallel_after=0))


def _as_set(entries):
    return sorted(entries)


def test_the_pool_reads_exactly_what_this_process_reads(tmp_path):
    _tree(tmp_path)
    for known in (None, {}):
        assert _as_set(_pooled(tmp_path, known=known)) == _as_set(_walk(tmp_path, known=known))
    first = _walk(tmp_path, known={})
    known = _known(first)
    _file(tmp_path / "d3/sub1/f1.bin", b"changed")  # one directory changes, the rest are 'u'
    serial, pooled = _walk(tmp_path, known=known), _pooled(tmp_path, known=known)
    assert _as_set(pooled) == _as_set(serial)
    assert _files(pooled) == [b"d3/sub1/f0.bin", b"d3/sub1/f1.bin", b"d3/sub1/f2.bin", b"d3/sub1/f3.bin"]
    assert _types(pooled)[b"d3/sub1"] == "d" and _types(pooled)[b"d2/sub0"] == "u"


def test_the_pool_keeps_the_fast_path_and_the_globs(tmp_path):
    _tree(tmp_path)
    known = _known(_walk(tmp_path, known={}))
    _file(tmp_path / "d5/new.bin", b"n")  # a new file: d5's mtime changes, so d5 is read
    fast = _pooled(tmp_path, known=known, fast=True)
    assert _as_set(fast) == _as_set(_walk(tmp_path, known=known, fast=True))
    assert _files(fast) == [b"d5/new.bin", b"d5/top.bin"] and _types(fast)[b"d4"] == "s"

    def only_sub0(path):
        return b"/sub0/" in path

    assert _files(_pooled(tmp_path, known={}, matcher=only_sub0)) == _files(
        _walk(tmp_path, known={}, matcher=only_sub0))


def test_a_directory_too_big_for_a_worker_is_streamed_by_this_process(tmp_path, monkeypatch):
    from reconciler.kinds.replicas import local_walk

    _tree(tmp_path, dirs=3, files=5)
    monkeypatch.setattr(local_walk, "BUFFERED_FILES", 3)  # set before the fork: the workers see it too
    pooled = _pooled(tmp_path, known={})
    assert _as_set(pooled) == _as_set(_walk(tmp_path, known={}))
    assert [entry.digest for entry in pooled if entry.path == b"d1/sub1"] == [None]  # streamed: no digest
    assert len(_files(pooled)) == 3 * 6 + 1


def test_a_directory_that_vanishes_before_a_worker_reads_it_fails_the_listing(tmp_path):
    import shutil

    import pytest

    from reconciler.errors import ObserveError

    _tree(tmp_path, dirs=2)
    _file(tmp_path / "trigger.bin", b"")

    def remove_d1_once_listed(path):
        # Called in this process for the root's files, after the root's entries were read
        # (a small directory comes in one getdents call), so d1 is queued and then gone.
        if path == b"trigger.bin" and (tmp_path / "d1").exists():
            shutil.rmtree(tmp_path / "d1")
        return True

    with pytest.raises(ObserveError, match=r"d1 vanished while it was being listed; run again"):
        _pooled(tmp_path, known={}, matcher=remove_d1_once_listed)


def test_a_worker_that_dies_fails_the_listing_with_what_to_do(tmp_path):
    import pytest

    from reconciler.errors import ObserveError

    _tree(tmp_path, dirs=3)
    parent = os.getpid()

    def die_in_a_worker(path):
        if os.getpid() != parent:
            os._exit(9)  # as the kernel's OOM killer would end it
        return True

    with pytest.raises(ObserveError, match=r"a process reading it died .*set scan_jobs = 1"):
        _pooled(tmp_path, known={}, matcher=die_in_a_worker)

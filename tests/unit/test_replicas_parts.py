"""Pure parts of the replicas kind: path encoding, locations, rsync argv and output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.kinds.replicas import paths
from reconciler.kinds.replicas.location import Location, SshSettings
from reconciler.kinds.replicas.rsync import Batch, copy_invocation, plan_batches, unescape


@given(st.binary(min_size=1, max_size=64).filter(lambda raw: b"\0" not in raw))
def test_any_file_name_round_trips_through_text(raw):
    text = paths.to_text(raw)
    text.encode("utf-8")  # always storable as UTF-8 text
    assert paths.to_bytes(text) == raw


def test_readable_names_stay_readable():
    assert paths.to_text("telem/ünï.bin".encode()) == "telem/ünï.bin"
    assert paths.to_text(b"\xff").startswith("b64:")
    assert paths.to_bytes(paths.to_text(b"b64:lookalike")) == b"b64:lookalike"


@pytest.mark.parametrize("text,expected", [
    ("/mnt/backup", Location("/mnt/backup")),
    ("/mnt/backup/", Location("/mnt/backup")),
    ("ssh://popeye/ceph/magao-x/", Location("/ceph/magao-x", "popeye")),
    ("ssh://xsup@exao1:2222/opt/MagAOX", Location("/opt/MagAOX", "exao1", "xsup", 2222)),
])
def test_locations_parse(text, expected):
    assert Location.parse(text) == expected


@pytest.mark.parametrize("text,message", [
    ("ftp://host/x", "unsupported URL scheme"),
    ("ssh:///x", "no host"),
    ("ssh://host", "must be absolute"),
])
def test_bad_locations_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        Location.parse(text)


def test_rsync_argv_for_each_direction():
    ssh = SshSettings(identity_file="/k", options=("StrictHostKeyChecking=yes",))
    local = Location("/data")
    remote = Location("/ceph/magao-x", "popeye", "xsup", 2222)
    common = ["-a", "--from0", "--files-from=-", "--partial-dir=.rsync-partial", "--mkpath", "--out-format=%n"]
    assert copy_invocation(local, Location("/mnt/backup"), "exao1", ssh).argv == [
        "rsync", *common, "/data/", "/mnt/backup/exao1/"]
    to_remote = copy_invocation(local, remote, "exao1", ssh).argv
    assert to_remote[:7] == ["rsync", *common]
    assert to_remote[7] == "-e" and "-p 2222" in to_remote[8] and "-i /k" in to_remote[8]
    assert to_remote[-2:] == ["/data/", "xsup@popeye:/ceph/magao-x/exao1/"]
    both = copy_invocation(Location("/opt/MagAOX", "exao1"), remote, "exao1", ssh).argv
    assert both[0] == "ssh" and both[-2] == "exao1"  # rsync runs on the origin host
    assert both[-1].startswith("rsync -a") and "xsup@popeye:/ceph/magao-x/exao1/" in both[-1]


def test_a_batch_run_from_inside_a_directory_copies_it_to_the_same_place():
    ssh = SshSettings()
    argv = copy_invocation(Location("/data"), Location("/mnt/backup"), "exao1", ssh, "telem/2026-11-21").argv
    assert argv[-2:] == ["/data/telem/2026-11-21/", "/mnt/backup/exao1/telem/2026-11-21/"]
    remote = copy_invocation(Location("/data", "exao1"), Location("/mnt/backup"), "exao1", ssh, "raw").argv
    assert remote[-2:] == ["exao1:/data/raw/", "/mnt/backup/exao1/raw/"]


def test_large_plain_directories_get_batches_of_their_own():
    big = [b"telem/day1/f%04d" % index for index in range(7)]
    awkward = [b"with space/f%d" % index for index in range(7)] + [b"-dash/f%d" % index for index in range(7)]
    latin = [b"caf\xe9/f%d" % index for index in range(7)]
    small = [b"logs/a.log", b"top.bin", b"telem/day2/x"]
    batches = plan_batches(big + awkward + latin + small, own_batch_from=5, limit=4)
    assert [(batch.subdir, len(batch.names)) for batch in batches if batch.subdir] == [
        ("telem/day1", 4), ("telem/day1", 3)]
    assert batches[0].names[0] == b"f0000" and batches[0].full(b"f0000") == b"telem/day1/f0000"
    rooted = [name for batch in batches if not batch.subdir for name in batch.names]
    assert sorted(rooted) == sorted(awkward + latin + small)
    assert all(len(batch.names) <= 4 for batch in batches)
    every = sorted(batch.full(name) for batch in batches for name in batch.names)
    assert every == sorted(big + awkward + latin + small)
    assert plan_batches([]) == [] and plan_batches([b"a"]) == [Batch("", [b"a"])]


def test_rsync_output_escapes_are_undone():
    assert unescape(rb"new\#012line") == b"new\nline"
    assert unescape(rb"latin\#351") == b"latin\xe9"
    assert unescape(b"plain") == b"plain"

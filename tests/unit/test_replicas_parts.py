"""Pure parts of the replicas kind: path encoding, locations, rsync argv and output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.kinds.replicas import paths
from reconciler.kinds.replicas.config import ReplicaConfig
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import exact_args
from reconciler.providers.rsync import Invocation, copy_invocation, last_words, plan_batches, run_copies, unescape


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
    tail = ["--partial-dir=.rsync-partial", "--mkpath", "--out-format=%n"]
    as_arguments = ["-a", "--relative", "--no-recursive", "--dirs", *tail]
    from_stdin = ["-a", "--from0", "--files-from=-", *tail]
    # A local sender: run in the origin's root, names as arguments before the destination.
    here = copy_invocation(local, Location("/mnt/backup"), "exao1", ssh)
    assert here == Invocation(["rsync", *as_arguments, "/mnt/backup/exao1/"], cwd="/data")
    to_remote = copy_invocation(local, remote, "exao1", ssh)
    assert to_remote.cwd == "/data" and to_remote.argv[:8] == ["rsync", *as_arguments]
    assert to_remote.argv[8] == "-e" and "-p 2222" in to_remote.argv[9] and "-i /k" in to_remote.argv[9]
    assert to_remote.argv[-1] == "xsup@popeye:/ceph/magao-x/exao1/"
    # A remote sender gets the list on stdin, which rsync forwards over its own protocol.
    from_remote = copy_invocation(remote, Location("/mnt/backup"), "exao1", ssh)
    assert from_remote.cwd is None and from_remote.argv[:7] == ["rsync", *from_stdin]
    assert from_remote.argv[-2:] == ["xsup@popeye:/ceph/magao-x/", "/mnt/backup/exao1/"]
    both = copy_invocation(Location("/opt/MagAOX", "exao1"), remote, "exao1", ssh).argv
    assert both[0] == "ssh" and both[-2] == "exao1"  # rsync runs on the origin host
    assert both[-1].startswith("rsync -a --from0") and "xsup@popeye:/ceph/magao-x/exao1/" in both[-1]


def test_bwlimit_reaches_every_rsync_in_every_direction():
    ssh = SshSettings()
    local, remote = Location("/data"), Location("/ceph/magao-x", "popeye")
    for source, destination in [(local, Location("/mnt")), (local, remote), (remote, Location("/mnt"))]:
        argv = copy_invocation(source, destination, "exao1", ssh, bwlimit_kib=640).argv
        assert argv.count("--bwlimit=640") == 1
        assert "--bwlimit" not in " ".join(copy_invocation(source, destination, "exao1", ssh).argv)
    both = copy_invocation(Location("/opt/MagAOX", "exao1"), remote, "exao1", ssh, bwlimit_kib=640).argv
    assert " --bwlimit=640 " in both[-1]  # in the rsync run on the origin host


def test_bwlimit_is_split_among_the_copy_jobs():
    assert ReplicaConfig(bwlimit="50MiB", copy_jobs=2).bwlimit_kib() == 25 * 1024
    assert ReplicaConfig(bwlimit=3000, copy_jobs=2).bwlimit_kib() == 1
    assert ReplicaConfig().bwlimit_kib() is None
    with pytest.raises(ValueError, match="less than 1 KiB/s for each of the copy_jobs = 3"):
        ReplicaConfig(bwlimit="2KiB", copy_jobs=3)


def test_names_go_as_arguments_or_on_stdin_exactly():
    names = [b"plain.fits", b"-dash", b"host:colon", b"new\nline", b"caf\xe9", b"sub/dir/x"]
    argv, stdin = Invocation(["rsync", "-a", "/dst/"], cwd="/src").command(names)
    assert stdin == b"" and argv[:2] == ["rsync", "-a"] and argv[-1] == "/dst/"
    assert argv[2:-1] == [b"./" + name for name in names]  # never an option, never host:path
    argv, stdin = Invocation(["rsync", "-a", "h:/src/", "/dst/"]).command(names)
    assert argv == ["rsync", "-a", "h:/src/", "/dst/"] and stdin == b"\0".join(names) + b"\0"
    assert exact_args(["/données", "/数据", b"caf\xe9"]) == [
        "/données".encode().decode("latin-1"), "/数据".encode().decode("latin-1"), "caf\xe9"]


def test_batches_are_bounded_by_count_and_by_argument_bytes():
    names = [b"telem/day%d/f%04d" % (day, index) for day in range(3) for index in range(7)]
    batches = plan_batches(names, limit=4)
    assert [len(batch) for batch in batches] == [4, 4, 4, 4, 4, 1]
    assert [name for batch in batches for name in batch] == names  # every file once, in order
    long = [b"raw/%s/f%05d" % (b"x" * 200, index) for index in range(100)]  # 222 bytes each: 18 a batch
    batches = plan_batches(long, max_bytes=4096)
    assert all(sum(len(name) + 11 for name in batch) <= 4096 for batch in batches)
    assert len(batches) == 6 and [name for batch in batches for name in batch] == long
    assert plan_batches([]) == [] and plan_batches([b"a"]) == [[b"a"]]
    assert plan_batches([b"x" * 5000], max_bytes=4096) == [[b"x" * 5000]]  # a long path still goes alone


def test_a_first_batch_of_its_own_size_leads_the_rest():
    # The first batch runs alone (it creates <replica>/<origin>/); one file there lets the
    # parallel batches start at once instead of after a whole batch.
    names = [b"f%02d" % index for index in range(10)]
    batches = plan_batches(names, limit=4, first_limit=1)
    assert [len(batch) for batch in batches] == [1, 4, 4, 1]
    assert [name for batch in batches for name in batch] == names
    assert plan_batches([b"a"], limit=4, first_limit=1) == [[b"a"]]


def test_rsync_output_escapes_are_undone():
    assert unescape(rb"new\#012line") == b"new\nline"
    assert unescape(rb"latin\#351") == b"latin\xe9"
    assert unescape(b"plain") == b"plain"


def test_the_first_batch_runs_alone_then_the_rest_in_parallel(tmp_path):
    # Real processes (sh, not rsync) logging when each batch starts and ends: the first
    # batch's --mkpath creates the replica's directory, which parallel rsyncs would race for.
    log = tmp_path / "log"
    script = 'read batch; echo "start $batch" >> "$0"; sleep 0.3; echo "end $batch" >> "$0"'
    invocation = Invocation(["sh", "-c", script, str(log)])
    recorded: list[tuple[int, list[bytes] | None]] = []
    result = run_copies(invocation, [[b"1"], [b"2"], [b"3"]], jobs=2,
                        delivered=lambda index, files: recorded.append((index, files)))
    lines = log.read_text().split("\n")
    assert lines[:2] == ["start 1", "end 1"]
    assert sorted(lines[2:4]) == ["start 2", "start 3"]  # both at once after the first
    assert result.complete and result.delivered == 3 and sorted(recorded) == [(0, None), (1, None), (2, None)]


def test_last_words_name_the_cause_not_rsyncs_summary():
    errors = ['rsync: [Receiver] mkdir "/mnt/backup/exao1" failed: File exists (17)',
              "rsync error: error in file IO (code 11) at main.c(808) [Receiver=3.5.0]"]
    assert last_words(11, errors) == errors[0]
    assert last_words(11, errors[1:]) == errors[1]
    assert last_words(11, []) == "exit 11"

"""Listing a tree on an ssh host with streamed ``find … -printf`` (never one ssh call per file).

In full, one ``find -depth`` lists every file and directory, a directory's record after
all of its files. So, as in a local walk, each directory's files are held until its
record arrives, and a directory whose files (names, sizes, mtimes) have the digest
recorded last time yields one 'u' entry instead of its files: an unchanged remote tree
is still streamed and parsed, but costs the inventory nothing. A directory of more
than BUFFERED_FILES files is streamed as it comes, without a digest.

On the fast path (immutable origins) a first ``find`` lists the directories alone (no
file is stat'ed); those whose mtime is as recorded and whose files were settled yield
's'. A second ``ssh`` lists the files of only the others, their names sent NUL-separated
to ``xargs -0`` on its stdin. The host needs GNU find (for ``-printf``) and xargs.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Iterator

from reconciler.errors import ObserveError
from reconciler.kinds.replicas.listing import (
    BUFFERED_FILES,
    PARTIAL_DIR,
    Entry,
    File,
    KnownDir,
    Matcher,
    digest_if_changed,
    directory_entries,
    file_entries,
)
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import KilledBySignal, Streamed, require

FIND_FORMAT = r"%y %s %T@ %P\0"  # type, size, mtime, path below the root
DIR_FORMAT = r"%T@ %P\0"  # a directory: mtime, path below the root
DIR_FILES_FORMAT = r"%s %T@ %p\0"  # a file of a directory named ./dir: size, mtime, ./dir/name

Record = tuple[bytes, bytes, int, bytes]  # type (b"f", b"d"), size, mtime_ns, relative path


def walk_remote(
    location: Location,
    settings: SshSettings,
    matcher: Matcher | None,
    settle_cutoff_ns: int,
    known: dict[bytes, KnownDir] | None = None,
    fast: bool = False,
) -> Iterator[Entry]:
    """Walk a remote tree, yielding its entries (in no set order).

    ``known`` holds each directory as the previous listing recorded it (None for a
    replica's listing: every file is yielded and no digests are computed); ``fast``
    takes the fast path described above. Files whose mtime is after
    ``settle_cutoff_ns`` make their directory unsettled.

    Raises ObserveError when the host cannot be reached or the tree cannot be read.
    """
    root = shlex.quote(location.path)
    if not fast or not known:
        script = f"test -d {root} && " + _quoted(
            "find", location.path + "/", "-depth", "(", "-type", "f", "-o", "-type", "d", ")", "-printf", FIND_FORMAT)
        records = (_full_record(record) for record in _remote_records(location, settings, script))
        yield from _entries(records, known, matcher, settle_cutoff_ns)
        return

    script = f"test -d {root} && " + _quoted(
        "find", location.path + "/", "-name", PARTIAL_DIR.decode(), "-prune", "-o", "-type", "d",
        "-printf", DIR_FORMAT)
    to_read: dict[bytes, int] = {}
    for record in _remote_records(location, settings, script):
        mtime, path = record.split(b" ", 1)
        mtime_ns = _parse_mtime(mtime)
        before = known.get(path)
        if before is not None and before.mtime_ns == mtime_ns and before.settled:
            yield Entry("s", path, 0, mtime_ns, True, before.digest)
        else:
            to_read[path] = mtime_ns
    if to_read:
        # xargs appends the directories after the format; "./" keeps a leading dash from reading as an option.
        reader = 'f=$1; shift; exec find "$@" -mindepth 1 -maxdepth 1 -type f -printf "$f"'
        script = f"cd {root} && " + _quoted("xargs", "-0", "sh", "-c", reader, "sh", DIR_FILES_FORMAT)
        names = b"".join(b"./" + path + b"\0" if path else b".\0" for path in to_read)
        lines = _remote_records(location, settings, script, names)
        yield from _entries(_files_then_their_dir(lines, to_read), known, matcher, settle_cutoff_ns)


def _full_record(record: bytes) -> Record:
    kind, size, mtime, path = record.split(b" ", 3)
    return kind, size, _parse_mtime(mtime), path


def _files_then_their_dir(lines: Iterable[bytes], dirs: dict[bytes, int]) -> Iterator[Record]:
    """Records of the fast path's second listing, each directory's record after its files:
    find reads its starting points one after another, so a directory is done when the
    next one's files begin; directories without files come at the end."""
    current: bytes | None = None
    for line in lines:
        size, mtime, path = line.split(b" ", 2)
        path = path[2:]  # "./dir/name": "dir/name"
        parent = path.rpartition(b"/")[0]
        if parent != current:
            if current is not None:
                yield b"d", b"0", dirs.pop(current), current
            current = parent
        yield b"f", size, _parse_mtime(mtime), path
    if current is not None:
        yield b"d", b"0", dirs.pop(current), current
    for path, mtime_ns in dirs.items():
        yield b"d", b"0", mtime_ns, path


def _entries(records: Iterable[Record], known: dict[bytes, KnownDir] | None, matcher: Matcher | None,
             settle_cutoff_ns: int) -> Iterator[Entry]:
    """Entries of records in which a directory's record follows all of its files."""
    pending: dict[bytes, list[File]] = {}  # files of directories whose record has not come yet
    streamed: set[bytes] = set()  # directories too big to hold: their files were yielded as they came
    unsettled: set[bytes] = set()
    hold = known is not None
    for kind, size, mtime_ns, path in records:
        if PARTIAL_DIR in path and _in_partial_dir(path):
            continue
        if kind == b"f":
            if matcher is not None and not matcher(path):
                continue
            parent, _, name = path.rpartition(b"/")
            if mtime_ns > settle_cutoff_ns:
                unsettled.add(parent)
            if not hold or parent in streamed:
                yield Entry("f", path, int(size), mtime_ns)
                continue
            files = pending.get(parent)
            if files is None:
                files = pending[parent] = []
            files.append((name, int(size), mtime_ns))
            if len(files) > BUFFERED_FILES:
                streamed.add(parent)
                yield from file_entries(parent, pending.pop(parent))
        elif kind == b"d":
            files = pending.pop(path, [])
            digest, changed = (None, True) if path in streamed else digest_if_changed(known, path, files)
            yield from directory_entries(path, mtime_ns, files if changed else None, path not in unsettled, digest)
    if pending:  # find printed files of a directory it never printed: never take that for complete
        raise ObserveError(f"the listing ended without the directory {os.fsdecode(next(iter(pending)))!r}; "
                          "run again")


def _remote_records(location: Location, settings: SshSettings, script: str, stdin: bytes | None = None,
                    ) -> Iterator[bytes]:
    """Run ``script`` on the location's host and stream its NUL-terminated records back.

    Raises ObserveError when the host cannot be reached or the script fails.
    """
    ssh = require("ssh", "openssh-client")
    run = Streamed(ssh, [*location.ssh_args(settings)[1:], script], stdin)
    try:
        yield from run.records()
    except KilledBySignal as error:
        raise ObserveError(f"listing {location} failed: ssh was {error}") from None
    exit_code = run.exit_code
    if exit_code == 0:
        return
    stderr = [line for line in run.stderr if line.strip()]
    reason = stderr[-1] if stderr else f"exit {exit_code}"
    if exit_code == 255:
        raise ObserveError(f"cannot reach {location.destination} over ssh: {reason}")
    if exit_code == 1 and not stderr:
        raise ObserveError(f"{location} does not exist or is not a directory")
    if exit_code == 123:  # xargs: a directory listed a moment ago could not be read
        raise ObserveError(f"listing {location} failed: {reason}; run again")
    raise ObserveError(f"listing {location} failed: {reason}")


def _parse_mtime(text: bytes) -> int:
    seconds, _, fraction = text.partition(b".")
    return int(seconds) * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))


def _in_partial_dir(path: bytes) -> bool:
    return PARTIAL_DIR in path.split(b"/")


def _quoted(*parts: str) -> str:
    return " ".join(shlex.quote(part) for part in parts)

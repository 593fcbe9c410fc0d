"""Listing a tree: locally with os.scandir, remotely with one streamed ``find``.

A listing yields ``Entry`` tuples: files ('f'), directories that were listed
('d'), directories that were listed and found exactly as recorded ('u', their
files not yielded) and, on the fast path, directories whose files were not
re-read because nothing in them can have changed ('s'). Any error reading the tree raises
ObserveError: a partial listing must never be mistaken for files being gone.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from stat import S_ISDIR
from typing import NamedTuple

import sh
from wcmatch import glob as wcglob

from reconciler.errors import ObserveError, ToolMissingError
from reconciler.kinds.replicas.location import Location, SshSettings

PARTIAL_DIR = b".rsync-partial"
FIND_FORMAT = r"%y %s %T@ %P\0"


class Entry(NamedTuple):
    entry_type: str  # 'f' file; 'd' listed directory; 'u' listed, its files exactly as recorded
    #                  (not yielded); 's' skipped, unchanged by its mtime (fast path, not read)
    path: bytes  # relative to the listed root; b"" for the root itself
    size: int
    mtime_ns: int
    settled: bool = True  # for directories: every file in it was settled
    digest: str | None = None  # for directories: of the files' names, sizes and mtimes (see files_digest)


class KnownDir(NamedTuple):
    """A directory as the previous listing of its origin recorded it."""

    mtime_ns: int
    settled: bool
    digest: str | None


Matcher = Callable[[bytes], bool]


def make_matcher(include: list[str], exclude: list[str]) -> Matcher | None:
    """A predicate on relative paths: matches an include glob (all when none) and no exclude glob.
    None when there are no globs at all (everything matches; nothing to call per file).

    Globs follow shell rules with ``**`` spanning directories; dotfiles are not special.
    The globs are translated once (by wcmatch) into compiled regular expressions.
    """
    if not include and not exclude:
        return None
    flags = wcglob.GLOBSTAR | wcglob.DOTGLOB
    included, _ = wcglob.translate([os.fsencode(p) for p in include or ["**"]], flags=flags)
    excluded, _ = wcglob.translate([os.fsencode(p) for p in exclude], flags=flags) if exclude else ([], [])
    include_any = re.compile(b"|".join(b"(?:%s)" % pattern for pattern in included)).fullmatch
    if not excluded:
        return lambda path: include_any(path) is not None
    exclude_any = re.compile(b"|".join(b"(?:%s)" % pattern for pattern in excluded)).fullmatch
    return lambda path: include_any(path) is not None and exclude_any(path) is None


def _unreadable(path: bytes, error: OSError, missing: str) -> ObserveError:
    """The one-line error for a path that could not be read."""
    name = os.fsdecode(path)
    if isinstance(error, FileNotFoundError):
        return ObserveError(f"{name} {missing}")
    if isinstance(error, PermissionError):
        return ObserveError(f"{name}: permission denied")
    return ObserveError(f"{name}: {error.strerror}")


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _children(known: dict[bytes, tuple[int, bool]]) -> dict[bytes, list[bytes]]:
    children: dict[bytes, list[bytes]] = {}
    for path in known:
        if path:
            children.setdefault(path.rpartition(b"/")[0], []).append(path)
    return children


def _known_subdirs(top: bytes, relative: bytes, names: list[bytes]) -> list[tuple[bytes, int]] | None:
    """The recorded subdirectories of an unchanged directory with their current mtimes, or
    None when one is no longer a directory (then the directory is listed after all)."""
    found = []
    for path in names:
        try:
            stat = os.lstat(_join(top, path))
        except FileNotFoundError:
            return None
        if not S_ISDIR(stat.st_mode):
            return None
        found.append((path, stat.st_mtime_ns))
    return found


def files_digest(files: list[tuple[bytes, int, int]]) -> str:
    """A digest of a directory's (name, size, mtime_ns) triples, in any order.

    Equal digests mean the directory holds exactly the files recorded when the
    digest was stored; a digest that differs for any other reason (a new Python
    pickling differently, say) only costs the directory being folded in again.
    """
    return hashlib.blake2b(pickle.dumps(sorted(files), protocol=4), digest_size=16).hexdigest()


BUFFERED_FILES = 100_000  # a directory with more files is streamed and never skipped by digest


def walk_local(
    root: str,
    matcher: Matcher | None,
    settle_cutoff_ns: int,
    known: dict[bytes, KnownDir] | None = None,
    fast: bool = False,
    skip_names: frozenset[bytes] = frozenset({PARTIAL_DIR}),
) -> Iterator[Entry]:
    """Walk ``root`` depth-first without following links.

    ``known`` holds each directory as the previous listing recorded it; with it,
    a listed directory whose files (names, sizes, mtimes) are exactly those of
    then yields one 'u' entry instead of its files, so an unchanged tree costs
    a stat per file and nothing more. Without it (listing a replica) every file
    is yielded and no digests are computed.

    ``fast`` (the immutable fast path): a directory whose mtime is unchanged and
    whose files were settled is not read at all: its entries are the same as
    then (creating, removing or renaming an entry changes a directory's mtime),
    so it yields 's' and only its recorded subdirectories are looked at, one
    stat each, for changes further down.

    Files whose mtime is after ``settle_cutoff_ns`` make their directory unsettled.
    Raises ObserveError when ``root`` or anything below it cannot be read.
    """
    top = os.fsencode(root)
    try:
        root_stat = os.stat(top)
    except OSError as error:
        raise _unreadable(top, error, missing="does not exist") from None
    if not os.path.isdir(top):
        raise ObserveError(f"{root} is not a directory")
    children = _children(known) if known and fast else {}
    stack: list[tuple[bytes, int]] = [(b"", root_stat.st_mtime_ns)]
    while stack:
        relative, dir_mtime = stack.pop()
        full = _join(top, relative) if relative else top
        before = known.get(relative) if known is not None else None
        if fast and before is not None and before.mtime_ns == dir_mtime and before.settled:
            try:
                subdirs = _known_subdirs(top, relative, children.get(relative, []))
            except OSError as error:
                raise _unreadable(full, error, missing="vanished while it was being listed; run again") from None
            if subdirs is not None:
                stack.extend(subdirs)
                yield Entry("s", relative, 0, dir_mtime, True, before.digest)
                continue
        files: list[tuple[bytes, int, int]] = []  # buffered until the directory is known to have changed
        streamed = known is None  # files yielded as they are read; no digest
        settled = True  # of the files already yielded
        prefix = relative + b"/" if relative else b""
        try:
            with os.scandir(full) as iterator:
                for item in iterator:
                    name = item.name
                    if not item.is_file(follow_symlinks=False):  # files first: most entries are
                        if item.is_dir(follow_symlinks=False) and name not in skip_names:
                            stack.append((prefix + name, item.stat(follow_symlinks=False).st_mtime_ns))
                        continue
                    if matcher is not None and not matcher(prefix + name):
                        continue
                    stat = item.stat(follow_symlinks=False)
                    if streamed:
                        settled = settled and stat.st_mtime_ns <= settle_cutoff_ns
                        yield Entry("f", prefix + name, stat.st_size, stat.st_mtime_ns)
                        continue
                    files.append((name, stat.st_size, stat.st_mtime_ns))
                    if len(files) > BUFFERED_FILES:
                        streamed = True
                        settled = all(mtime_ns <= settle_cutoff_ns for _, _, mtime_ns in files)
                        for name_, size, mtime_ns in files:
                            yield Entry("f", prefix + name_, size, mtime_ns)
                        files = []
        except OSError as error:
            raise _unreadable(full, error, missing="vanished while it was being listed; run again") from None
        if streamed:
            yield Entry("d", relative, 0, dir_mtime, settled)
            continue
        settled = all(mtime_ns <= settle_cutoff_ns for _, _, mtime_ns in files)
        digest = files_digest(files)
        if before is not None and before.digest == digest:
            yield Entry("u", relative, 0, dir_mtime, settled, digest)
            continue
        for name, size, mtime_ns in files:
            yield Entry("f", prefix + name, size, mtime_ns)
        yield Entry("d", relative, 0, dir_mtime, settled, digest)


def require(binary: str, package: str) -> str:
    """The path of ``binary``. Raises ToolMissingError naming the install command."""
    found = shutil.which(binary)
    if not found:
        raise ToolMissingError(binary, f"apt-get install {package}, or your system's package manager")
    return found


def exact_args(args: list[str | bytes]) -> list[str]:
    """Arguments for an ``sh`` command run with ``_encoding="latin-1"``: sh encodes each
    with that, and latin-1 maps every byte to itself, so the program gets exactly the file
    system's bytes (of str arguments, as Python encodes paths; of bytes, as they are)."""
    return [os.fsencode(arg).decode("latin-1") for arg in args]


def _parse_mtime(text: bytes) -> int:
    seconds, _, fraction = text.partition(b".")
    return int(seconds) * 1_000_000_000 + int((fraction + b"000000000")[:9] or b"0")


def walk_remote(
    location: Location,
    settings: SshSettings,
    matcher: Matcher | None,
    settle_cutoff_ns: int,
) -> Iterator[Entry]:
    """List a remote tree with one ``ssh host find … -printf`` whose output is streamed
    (never one ssh call per file). No fast path: remote trees are listed in full.

    Raises ObserveError when the host cannot be reached or the path cannot be read.
    """
    ssh = require("ssh", "openssh-client")
    remote = " ".join(
        shlex.quote(part)
        for part in ["find", location.path + "/", "-mindepth", "1", "(", "-type", "f", "-o", "-type", "d", ")",
                     "-printf", FIND_FORMAT]
    )
    command = sh.Command(ssh)
    args = location.ssh_args(settings)[1:] + [f"test -d {shlex.quote(location.path)} && {remote}"]
    buffer = b""
    dirs: dict[bytes, tuple[int, bool]] = {b"": (0, True)}
    try:
        process = command(*exact_args(args), _iter=True, _out_bufsize=1 << 16, _encoding="latin-1", _err_to_out=False)
        for chunk in process:
            buffer += chunk.encode("latin-1")
            *records, buffer = buffer.split(b"\0")
            for record in records:
                kind, size, mtime, path = record.split(b" ", 3)
                if path == PARTIAL_DIR or path.startswith(PARTIAL_DIR + b"/") or b"/" + PARTIAL_DIR in path:
                    continue
                mtime_ns = _parse_mtime(mtime)
                if kind == b"d":
                    dirs[path] = (mtime_ns, dirs.get(path, (0, True))[1])
                    continue
                if kind != b"f" or (matcher is not None and not matcher(path)):
                    continue
                if mtime_ns > settle_cutoff_ns:
                    parent = path.rpartition(b"/")[0]
                    dirs[parent] = (dirs.get(parent, (0, True))[0], False)
                yield Entry("f", path, int(size), mtime_ns)
    except sh.ErrorReturnCode as error:
        stderr = error.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = stderr[-1] if stderr else f"exit {error.exit_code}"
        if error.exit_code == 255:
            raise ObserveError(f"cannot reach {location.destination} over ssh: {reason}") from None
        if error.exit_code == 1 and not stderr:
            raise ObserveError(f"{location} does not exist or is not a directory") from None
        raise ObserveError(f"listing {location} failed: {reason}") from None
    for path, (mtime_ns, settled) in dirs.items():
        yield Entry("d", path, 0, mtime_ns, settled)

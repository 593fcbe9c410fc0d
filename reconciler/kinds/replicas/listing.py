"""Listing a tree: what listings yield, and remotely with one streamed ``find`` (locally: local_walk).

A listing yields ``Entry`` tuples: files ('f'), directories that were listed
('d'), directories that were listed and found exactly as recorded ('u', their
files not yielded) and, on the fast path, directories whose files were not
re-read because nothing in them can have changed ('s'). Any error reading the tree raises
ObserveError: a partial listing must never be mistaken for files being gone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
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
    digest: str | None = None  # for directories: of the files' names, sizes and mtimes (see local_walk.files_digest)


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


def unreadable(path: bytes, error: OSError, missing: str) -> ObserveError:
    """The one-line error for a path that could not be read."""
    name = os.fsdecode(path)
    if isinstance(error, FileNotFoundError):
        return ObserveError(f"{name} {missing}")
    if isinstance(error, PermissionError):
        return ObserveError(f"{name}: permission denied")
    return ObserveError(f"{name}: {error.strerror}")


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

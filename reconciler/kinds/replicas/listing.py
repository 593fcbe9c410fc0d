"""Listing a tree: what listings yield, and remotely with streamed ``find`` over ssh (locally: local_walk).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import sh
from wcmatch import glob as wcglob

from reconciler.errors import ObserveError, ToolMissingError
from reconciler.kinds.replicas.location import Location, SshSettings

PARTIAL_DIR = b".rsync-partial"
FIND_FORMAT = r"%y %s %T@ %P\0"  # type, size, mtime, path below the root
DIR_FORMAT = r"%T@ %P\0"  # a directory: mtime, path below the root
DIR_FILES_FORMAT = r"%s %T@ %p\0"  # a file of a directory given as ./dir: size, mtime, ./dir/name


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


def _remote_records(location: Location, settings: SshSettings, script: str, stdin: bytes | None = None,
                    ) -> Iterator[bytes]:
    """Run ``script`` on the location's host and stream its NUL-terminated records back.

    Raises ObserveError when the host cannot be reached or the script fails.
    """
    ssh = require("ssh", "openssh-client")
    args = location.ssh_args(settings)[1:] + [script]
    buffer = b""
    extra = {} if stdin is None else {"_in": stdin}
    # Every exit code is taken and judged here: sh would also raise a failure from its own
    # thread, which nothing can catch (a traceback on stderr after the clean error).
    process = sh.Command(ssh)(*exact_args(args), _iter=True, _out_bufsize=1 << 16, _encoding="latin-1",
                              _err_to_out=False, _ok_code=list(range(256)), **extra)
    for chunk in process:
        buffer += chunk.encode("latin-1")
        *records, buffer = buffer.split(b"\0")
        yield from records
    process.wait()
    exit_code = process.exit_code
    if exit_code == 0:
        return
    stderr = process.stderr.decode("utf-8", "replace").strip().splitlines()
    reason = stderr[-1] if stderr else f"exit {exit_code}"
    if exit_code == 255:
        raise ObserveError(f"cannot reach {location.destination} over ssh: {reason}")
    if exit_code == 1 and not stderr:
        raise ObserveError(f"{location} does not exist or is not a directory")
    if exit_code == 123:  # xargs: a directory listed a moment ago could not be read
        raise ObserveError(f"listing {location} failed: {reason}; run again")
    raise ObserveError(f"listing {location} failed: {reason}")


def _in_partial_dir(path: bytes) -> bool:
    return path == PARTIAL_DIR or path.startswith(PARTIAL_DIR + b"/") or b"/" + PARTIAL_DIR in path


def _quoted(*parts: str) -> str:
    return " ".join(shlex.quote(part) for part in parts)


def walk_remote(
    location: Location,
    settings: SshSettings,
    matcher: Matcher | None,
    settle_cutoff_ns: int,
    known: dict[bytes, KnownDir] | None = None,
    fast: bool = False,
) -> Iterator[Entry]:
    """List a remote tree with streamed ``find … -printf`` output (never one ssh call per file).

    In full, one ``ssh host find`` lists every file and directory. On the fast path
    (``fast`` with the directories ``known`` from the last listing), a first ``find``
    lists only the directories (no file is stat'ed), and directories whose mtime is
    unchanged and whose files were settled yield 's'; a second ``ssh`` reads the
    files of the others only, their names sent on its stdin.

    Raises ObserveError when the host cannot be reached or the path cannot be read.
    """
    quoted_root = shlex.quote(location.path)
    if not fast or not known:
        script = f"test -d {quoted_root} && " + _quoted(
            "find", location.path + "/", "(", "-type", "f", "-o", "-type", "d", ")",
            "-printf", FIND_FORMAT)
        records = (record.split(b" ", 3) for record in _remote_records(location, settings, script))
        yield from _files_and_dirs(records, {}, matcher, settle_cutoff_ns)
        return

    script = f"test -d {quoted_root} && " + _quoted(
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
    if not to_read:
        return
    # xargs appends the directories after the format; "./" keeps a leading dash from reading as an option.
    reader = "f=$1; shift; exec find \"$@\" -mindepth 1 -maxdepth 1 -type f -printf \"$f\""
    script = f"cd {quoted_root} && " + _quoted("xargs", "-0", "sh", "-c", reader, "sh", DIR_FILES_FORMAT)
    names = b"".join(b"./" + path + b"\0" if path else b".\0" for path in to_read)

    def files() -> Iterator[list[bytes]]:
        for record in _remote_records(location, settings, script, names):
            size, mtime, path = record.split(b" ", 2)
            yield [b"f", size, mtime, path[2:]]  # "./dir/name": "dir/name"

    yield from _files_and_dirs(files(), to_read, matcher, settle_cutoff_ns)


def _files_and_dirs(
    records: Iterable[Sequence[bytes]],
    dirs: dict[bytes, int],
    matcher: Matcher | None,
    settle_cutoff_ns: int,
) -> Iterator[Entry]:
    """Entries of ``find`` records (type, size, mtime, relative path): the files as they
    come, then each directory ('d', with whether its files were settled) at the end.
    Directories found in the records are added to ``dirs`` (relative path: mtime)."""
    unsettled: set[bytes] = set()
    for kind, size, mtime, path in records:
        if _in_partial_dir(path):
            continue
        mtime_ns = _parse_mtime(mtime)
        if kind == b"d":
            dirs[path] = mtime_ns
            continue
        if kind != b"f" or (matcher is not None and not matcher(path)):
            continue
        if mtime_ns > settle_cutoff_ns:
            unsettled.add(path.rpartition(b"/")[0])
        yield Entry("f", path, int(size), mtime_ns)
    for path, mtime_ns in dirs.items():
        yield Entry("d", path, 0, mtime_ns, path not in unsettled)

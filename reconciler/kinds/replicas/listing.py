"""Listing a tree: what listings yield, and what the local and remote walks share
(they are in local_walk and remote_walk).

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
from collections.abc import Callable, Iterator
from typing import NamedTuple

from wcmatch import glob as wcglob

from reconciler.errors import ObserveError

PARTIAL_DIR = b".rsync-partial"
BUFFERED_FILES = 100_000  # a directory with more files is streamed and never skipped by digest


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
File = tuple[bytes, int, int]  # name, size, mtime_ns


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


def files_digest(files: list[File]) -> str:
    """A digest of a directory's (name, size, mtime_ns) triples, in any order.

    Equal digests mean the directory holds exactly the files recorded when the
    digest was stored; a digest that differs for any other reason (a new Python
    pickling differently, say) only costs the directory being folded in again.
    """
    return hashlib.blake2b(pickle.dumps(sorted(files), protocol=4), digest_size=16).hexdigest()


def digest_if_changed(known: dict[bytes, KnownDir] | None, relative: bytes,
                      files: list[File]) -> tuple[str | None, bool]:
    """(digest, changed) of a directory's files held in full: changed unless the digest is
    the one ``known`` recorded; no digest when nothing is known (a replica's listing)."""
    if known is None:
        return None, True
    digest = files_digest(files)
    before = known.get(relative)
    return digest, before is None or before.digest != digest


def file_entries(relative: bytes, files: list[File]) -> Iterator[Entry]:
    """The 'f' entries of files held for the directory ``relative``."""
    prefix = relative + b"/" if relative else b""
    for name, size, mtime_ns in files:
        yield Entry("f", prefix + name, size, mtime_ns)


def directory_entries(relative: bytes, dir_mtime: int, files: list[File] | None, settled: bool,
                      digest: str | None) -> Iterator[Entry]:
    """The entries of a directory read in full: 'u' alone when ``files`` is None (found
    unchanged), else its files then its 'd'."""
    if files is None:
        yield Entry("u", relative, 0, dir_mtime, settled, digest)
        return
    yield from file_entries(relative, files)
    yield Entry("d", relative, 0, dir_mtime, settled, digest)


def unreadable(path: bytes, error: OSError, missing: str) -> ObserveError:
    """The one-line error for a path that could not be read."""
    name = os.fsdecode(path)
    if isinstance(error, FileNotFoundError):
        return ObserveError(f"{name} {missing}")
    if isinstance(error, PermissionError):
        return ObserveError(f"{name}: permission denied")
    return ObserveError(f"{name}: {error.strerror}")

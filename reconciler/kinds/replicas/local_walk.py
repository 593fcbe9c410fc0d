"""Listing a local tree with os.scandir: in this process, and a big tree's rest in a pool.

Listing a directory is one ``stat`` per file. On a tree of 200,000 files that is
most of a plan's time, and almost all of it is the kernel's and the interpreter's
per-file work, which threads cannot share out (the GIL) but processes can. So the
first ``PARALLEL_AFTER`` files are listed here, and if the tree turns out bigger,
the directories still to list go, in batches, to ``jobs`` forked processes. A small
tree never starts a process. Each worker returns, per directory, its subdirectories
and either its files or only "unchanged" (its digest matched): an unchanged tree
costs a few bytes per directory to send back.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from stat import S_ISDIR

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
    unreadable,
)

PARALLEL_AFTER = 20_000  # files listed in this process before the rest of a tree goes to a pool
BATCH_FILES = 10_000  # about this many files per batch of directories sent to a worker
VANISHED = "vanished while it was being listed; run again"


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


@dataclass
class _Walk:
    """What listing any directory of one tree needs (forked workers inherit it)."""

    top: bytes
    matcher: Matcher | None
    cutoff_ns: int
    known: dict[bytes, KnownDir] | None  # None: a replica's listing (every file yielded, no digests)
    skip_names: frozenset[bytes]
    fast: bool
    children: dict[bytes, list[bytes]]
    listed: int = 0  # files read so far
    dirs_read: int = 0  # directories read so far

    def full(self, relative: bytes) -> bytes:
        return _join(self.top, relative) if relative else self.top

    def scan(self, relative: bytes, subdirs: list[tuple[bytes, int]]) -> Iterator[File]:
        """The files of one directory (after the globs); its subdirectories go to ``subdirs``."""
        prefix = relative + b"/" if relative else b""
        matcher, skip_names = self.matcher, self.skip_names
        with os.scandir(self.full(relative)) as iterator:
            for item in iterator:
                name = item.name
                if not item.is_file(follow_symlinks=False):  # files first: most entries are
                    if item.is_dir(follow_symlinks=False) and name not in skip_names:
                        subdirs.append((prefix + name, item.stat(follow_symlinks=False).st_mtime_ns))
                    continue
                if matcher is not None and not matcher(prefix + name):
                    continue
                stat = item.stat(follow_symlinks=False)
                yield name, stat.st_size, stat.st_mtime_ns

    def skip(self, relative: bytes, dir_mtime: int, stack: list[tuple[bytes, int]]) -> Entry | None:
        """The fast path: for a directory whose mtime is as recorded and whose files were
        settled, its 's' entry, with its recorded subdirectories (and their current mtimes)
        put on ``stack``; it is not read (creating, removing or renaming an entry changes a
        directory's mtime). None when the directory must be read (also when a recorded
        subdirectory is no longer one)."""
        before = self.known.get(relative) if self.fast and self.known is not None else None
        if before is None or before.mtime_ns != dir_mtime or not before.settled:
            return None
        found = []
        for path in self.children.get(relative, []):
            try:
                stat = os.lstat(_join(self.top, path))
            except FileNotFoundError:
                return None
            except OSError as error:
                raise unreadable(self.full(relative), error, missing=VANISHED) from None
            if not S_ISDIR(stat.st_mode):
                return None
            found.append((path, stat.st_mtime_ns))
        stack.extend(found)
        return Entry("s", relative, 0, dir_mtime, True, before.digest)

    def settled(self, files: list[File]) -> bool:
        return all(mtime_ns <= self.cutoff_ns for _, _, mtime_ns in files)

    def list_here(self, relative: bytes, dir_mtime: int, stack: list[tuple[bytes, int]]) -> Iterator[Entry]:
        """Read one directory in this process: files are buffered (to compare the digest)
        up to BUFFERED_FILES, streamed past that, and always streamed for a replica."""
        files: list[File] = []
        streamed = self.known is None
        settled = True  # of the files already yielded
        prefix = relative + b"/" if relative else b""
        self.dirs_read += 1
        try:
            for file in self.scan(relative, stack):
                self.listed += 1
                if streamed:
                    settled = settled and file[2] <= self.cutoff_ns
                    yield Entry("f", prefix + file[0], file[1], file[2])
                    continue
                files.append(file)
                if len(files) > BUFFERED_FILES:
                    streamed = True
                    settled = self.settled(files)
                    yield from file_entries(relative, files)
                    files = []
        except OSError as error:
            raise unreadable(self.full(relative), error, missing=VANISHED) from None
        if streamed:
            yield Entry("d", relative, 0, dir_mtime, settled)
            return
        digest, changed = digest_if_changed(self.known, relative, files)
        yield from directory_entries(relative, dir_mtime, files if changed else None, self.settled(files), digest)


def _children(known: dict[bytes, KnownDir]) -> dict[bytes, list[bytes]]:
    children: dict[bytes, list[bytes]] = {}
    for path in known:
        if path:
            children.setdefault(path.rpartition(b"/")[0], []).append(path)
    return children


def walk_local(
    root: str,
    matcher: Matcher | None,
    settle_cutoff_ns: int,
    known: dict[bytes, KnownDir] | None = None,
    fast: bool = False,
    skip_names: frozenset[bytes] = frozenset({PARTIAL_DIR}),
    jobs: int = 1,
    parallel_after: int = PARALLEL_AFTER,
) -> Iterator[Entry]:
    """Walk ``root`` without following links, yielding its entries (in no set order).

    ``known`` holds each directory as the previous listing recorded it; with it,
    a listed directory whose files (names, sizes, mtimes) are exactly those of
    then yields one 'u' entry instead of its files, so an unchanged tree costs
    a stat per file and nothing more. Without it (listing a replica) every file
    is yielded and no digests are computed.

    ``fast`` (the immutable fast path): a directory whose mtime is unchanged and
    whose files were settled is not read at all: it yields 's' and only its
    recorded subdirectories are looked at, one stat each, for changes further down.

    ``jobs`` > 1: once ``parallel_after`` files have been read, the rest of the tree
    is read by that many worker processes (where processes can be forked).

    Files whose mtime is after ``settle_cutoff_ns`` make their directory unsettled.
    Raises ObserveError when ``root`` or anything below it cannot be read.
    """
    top = os.fsencode(root)
    try:
        root_stat = os.stat(top)
    except OSError as error:
        raise unreadable(top, error, missing="does not exist") from None
    if not os.path.isdir(top):
        raise ObserveError(f"{root} is not a directory")
    walk = _Walk(top, matcher, settle_cutoff_ns, known, skip_names, fast,
                 _children(known) if known and fast else {})
    stack: list[tuple[bytes, int]] = [(b"", root_stat.st_mtime_ns)]
    pool_possible = jobs > 1 and "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux"
    while stack:
        if pool_possible and walk.listed >= parallel_after and len(stack) > 1:
            yield from _walk_in_pool(walk, stack, jobs)
            return
        relative, dir_mtime = stack.pop()
        skipped = walk.skip(relative, dir_mtime, stack)
        if skipped is not None:
            yield skipped
            continue
        yield from walk.list_here(relative, dir_mtime, stack)


# --- the pool -------------------------------------------------------------------------------

_WORKER_WALK: _Walk | None = None

# One directory's result from a worker: ("ok", relative, dir_mtime, subdirs, files or None when
# unchanged, settled, digest, number of files); ("big", relative, dir_mtime) for one to stream in the parent;
# ("error", full path, OSError).
Result = tuple


def _adopt(walk: _Walk) -> None:
    """Worker start: the parent's walk (inherited through fork, never pickled); Ctrl-C is
    the parent's to handle (it stops the pool), not a traceback from every worker."""
    global _WORKER_WALK
    _WORKER_WALK = walk
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _list_batch(batch: list[tuple[bytes, int]]) -> list[Result]:
    walk = _WORKER_WALK
    assert walk is not None
    results: list[Result] = []
    for relative, dir_mtime in batch:
        subdirs: list[tuple[bytes, int]] = []
        files: list[File] = []
        try:
            for file in walk.scan(relative, subdirs):
                files.append(file)
                if len(files) > BUFFERED_FILES:
                    break
        except OSError as error:
            results.append(("error", walk.full(relative), error))
            continue
        if len(files) > BUFFERED_FILES:
            results.append(("big", relative, dir_mtime))
            continue
        digest, changed = digest_if_changed(walk.known, relative, files)
        results.append(("ok", relative, dir_mtime, subdirs, files if changed else None, walk.settled(files),
                        digest, len(files)))
    return results


def _walk_in_pool(walk: _Walk, stack: list[tuple[bytes, int]], jobs: int) -> Iterator[Entry]:
    """List the directories on ``stack`` and below with ``jobs`` forked workers. Batches hold
    about BATCH_FILES files (judged by the directories read so far), so neither a tree of
    many tiny directories pays one round trip each nor one worker gets all the work."""
    pending: set[Future[list[Result]]] = set()
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"),
                               initializer=_adopt, initargs=(walk,))
    try:
        while stack or pending:
            while stack and len(pending) < 2 * jobs:
                per_dir = walk.listed / max(1, walk.dirs_read)
                limit = max(1, min(512, int(BATCH_FILES / max(per_dir, 1)), len(stack) // jobs or 1))
                batch: list[tuple[bytes, int]] = []
                while stack and len(batch) < limit:
                    relative, dir_mtime = stack.pop()
                    skipped = walk.skip(relative, dir_mtime, stack)
                    if skipped is None:
                        batch.append((relative, dir_mtime))
                    else:
                        yield skipped
                if batch:
                    pending.add(pool.submit(_list_batch, batch))
            if not pending:
                continue
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                for result in future.result():
                    if result[0] == "error":
                        raise unreadable(result[1], result[2], missing=VANISHED)
                    if result[0] == "big":
                        yield from walk.list_here(result[1], result[2], stack)
                        continue
                    _, relative, dir_mtime, subdirs, files, settled, digest, count = result
                    stack.extend(subdirs)
                    walk.dirs_read += 1
                    walk.listed += count
                    yield from directory_entries(relative, dir_mtime, files, settled, digest)
    except BrokenProcessPool:  # from submit or result, whichever notices first
        raise ObserveError(f"{os.fsdecode(walk.top)}: a process reading it died (killed, or out of memory); "
                           "run again, or set scan_jobs = 1 for this origin") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

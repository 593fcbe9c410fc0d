"""Copying a project directory to its new path with rsync, and proving the copy complete.

The copy never writes to the source. rsync keeps unfinished files in
``.rsync-partial`` so an interrupted copy never leaves a truncated file under its
final name; the next run resumes. A copy counts only when verified: the same
files with the same sizes on both sides, and the same exported records
(sha256 over project.json, workspaces.json, job_manifest.json and every job.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ApplyError
from reconciler.providers.cryosparc.model import records_digest
from reconciler.providers.rsync import PARTIAL_DIR, failure, run_rsync


@dataclass(frozen=True)
class TreeSummary:
    files: int
    bytes: int


def tree_sizes(root: Path) -> dict[str, int]:
    """Relative path -> size (lstat) of every file and symlink below ``root``, skipping rsync's partial dirs."""
    sizes: dict[str, int] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != PARTIAL_DIR:
                        stack.append(Path(entry.path))
                else:
                    sizes[os.path.relpath(entry.path, root)] = entry.stat(follow_symlinks=False).st_size
    return sizes


def summarize_tree(root: Path) -> TreeSummary:
    sizes = tree_sizes(root)
    return TreeSummary(files=len(sizes), bytes=sum(sizes.values()))


def rsync_argv(source: str, destination: str) -> list[str]:
    """Archive mode, partial files out of final names, the destination's parents created,
    one line per transferred file (for progress)."""
    return ["rsync", "-a", f"--partial-dir={PARTIAL_DIR}", "--mkpath", "--out-format=%n",
            source.rstrip("/") + "/", destination.rstrip("/") + "/"]


def verify_copy(source: Path, destination: Path) -> tuple[TreeSummary, str]:
    """Raises ApplyError naming the first differences; returns the source's summary and records digest."""
    try:
        ours, theirs = tree_sizes(source), tree_sizes(destination)
    except OSError as error:
        raise ApplyError(f"cannot list {error.filename} to verify the copy: {error.strerror}") from None
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    differ = sorted(path for path in set(ours) & set(theirs) if ours[path] != theirs[path])
    problems = []
    for label, paths in (("missing", missing), ("unexpected", extra), ("of another size", differ)):
        if paths:
            problems.append(f"{len(paths)} file(s) {label} in the copy (e.g. {', '.join(paths[:3])})")
    digest, _ = records_digest(source)
    if not problems and records_digest(destination)[0] != digest:
        problems.append("the exported records (project.json, job.json…) differ between source and copy")
    if problems:
        raise ApplyError(f"the copy {destination} does not match {source}: " + "; ".join(problems))
    return TreeSummary(files=len(ours), bytes=sum(ours.values())), digest


def copy_project(source: Path, destination: Path,
                 progress: Callable[[int, int], None] | None = None) -> tuple[TreeSummary, str]:
    """rsync ``source`` to ``destination`` and verify the result (see module docstring)."""
    total = summarize_tree(source).files
    done = 0

    def on_names(names: list[bytes]) -> None:
        nonlocal done
        done += len(names)
        if progress:
            progress(done, max(total, done))

    code, errors = run_rsync(rsync_argv(str(source), str(destination)), b"", on_names)
    if code != 0:
        raise failure(code, errors)
    return verify_copy(source, destination)

"""What may come out of a bundle, decided once for ``verify-bundle`` and for ``import``.

A bundle is untrusted input. Python's ``tarfile`` ``data`` filter resolves links with a
non-strict ``realpath``, which stops resolving once a path grows past PATH_MAX: a chain of
symlinks through long directory names then looks as if it stayed inside the destination
while it points outside (the CVE-2025-4517 class). So nothing here relies on ``realpath`` or
on the file system to tell where a link goes:

- ``MemberPolicy`` judges every member lexically (no absolute path, no ``..``, only files,
  directories and symlinks, no setuid/setgid bits, bounded name lengths and member count),
  refuses any member that lies beneath a symlink member of the same bundle (an export never
  writes one: it does not descend into linked directories), and resolves every symlink
  *within the bundle's own tree*, following links to links as the kernel would (at most 40),
  refusing any whose target leaves ``data/``. The tree extracted into an empty staging
  directory is exactly that tree, so this resolution is the physical one.
- ``SafeExtractor`` writes members with the same policy applied again (the file may have
  changed since it was verified) and walks every parent directory with ``O_NOFOLLOW`` from a
  descriptor of the staging root, creating files with ``O_EXCL``; symlinks are created last,
  after all files and directories, so no write can pass through one even if a check above
  were wrong. The bytes written are bounded by what the verification counted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DATA = "data/"
MAX_MEMBERS = 5_000_000
MAX_NAME_BYTES = 3072  # a member's path below the bundle root (PATH_MAX is 4096 with the staging root)
MAX_COMPONENT_BYTES = 255  # NAME_MAX
MAX_LINK_HOPS = 40  # the kernel's own limit for following symlinks (ELOOP)
_BLOCK = 1 << 20


class LinkEscapes(Exception):
    """A symlink whose resolution leaves the project directory (message: why)."""


def name_reason(name: str) -> str | None:
    """Why a member's name is refused on its own, or None."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "'..' in the path"
    if "\x00" in name:
        return "a NUL byte in the path"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"path longer than {MAX_NAME_BYTES} bytes"
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES for part in parts):
        return f"a path component longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def member_reason(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted, judged on the member alone, or None."""
    reason = name_reason(member.name)
    if reason:
        return reason
    if not (member.isreg() or member.isdir() or member.issym()):
        return "not a regular file, directory or symlink (devices, fifos and hard links are refused)"
    if member.issym():
        target = member.linkname
        if os.path.isabs(target):
            return f"symlink to the absolute path {target}"
        if "\x00" in target or len(target.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            return "symlink target too long or with a NUL byte"
        if not member.name.startswith(DATA):
            return "symlink outside data/"
    if member.mode & 0o6000:
        return "setuid/setgid bits"
    return None


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve_link(name: str, links: dict[str, str]) -> list[str]:
    """The path components ``name`` (a symlink member below ``data/``) resolves to within the
    bundle's tree, following links to links. Raises LinkEscapes when it leaves ``data/`` or
    loops."""
    hops = 0

    def walk(base: list[str], target: str) -> list[str]:
        nonlocal hops
        stack = list(base)
        for part in _parts(target):
            if part == "..":
                if len(stack) <= 1:  # stack[0] is "data": going above it leaves the project
                    raise LinkEscapes("points outside the project")
                stack.pop()
                continue
            stack.append(part)
            linked = links.get("/".join(stack))
            if linked is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise LinkEscapes(f"more than {MAX_LINK_HOPS} links to follow (a loop?)")
                stack = walk(stack[:-1], linked)
        return stack

    parts = _parts(name)
    return walk(parts[:-1], links[name.rstrip("/")])


@dataclass
class MemberPolicy:
    """Judges the members of one bundle as they stream past, then the bundle as a whole."""

    problems: list[str] = field(default_factory=list)
    members: int = 0
    expanded_bytes: int = 0
    links: dict[str, str] = field(default_factory=dict)
    parents: set[str] = field(default_factory=set)

    def admit(self, member: tarfile.TarInfo) -> bool:
        """Record ``member``; False (with the problem recorded) when it is refused."""
        self.members += 1
        if self.members == MAX_MEMBERS + 1:
            self.problems.append(f"more than {MAX_MEMBERS:,} members: refused")
        if self.members > MAX_MEMBERS:
            return False
        reason = member_reason(member)
        if reason:
            self.problems.append(f"{member.name}: refused: {reason}")
            return False
        name = member.name.rstrip("/")
        parts = name.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in self.links:
                self.problems.append(f"{member.name}: refused: beneath the symlink {prefix}")
                return False
            self.parents.add(prefix)
        if member.issym():
            if name in self.parents:
                self.problems.append(f"{member.name}: refused: a symlink where the bundle has a directory")
                return False
            self.links[name] = member.linkname
        elif member.isreg():
            self.expanded_bytes += member.size
        return True

    def finish(self) -> list[str]:
        """Judge what only the whole bundle shows (links to links); returns all problems."""
        for name in sorted(self.links):
            if name in self.parents:
                self.problems.append(f"{name}: refused: members lie beneath this symlink")
                continue
            try:
                resolve_link(name, self.links)
            except LinkEscapes as error:
                self.problems.append(f"{name}: refused: symlink {self.links[name]!r} {error}")
        return self.problems


class ExtractionRefused(Exception):
    """A member the policy refuses, met while extracting (message: which and why)."""


class SafeExtractor:
    """Writes the ``data/`` members of a bundle into an empty ``root`` directory (see the
    module docstring). Use as a context manager; ``add`` each member, then ``finish``."""

    def __init__(self, root: Path, byte_budget: int | None = None):
        self.root = root
        self.budget = byte_budget
        self.policy = MemberPolicy()
        self.written = 0
        self.files = 0
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._cached: tuple[tuple[str, ...], int] | None = None
        self._links: list[tuple[tuple[str, ...], str, tarfile.TarInfo]] = []
        self._directories: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []

    def __enter__(self) -> SafeExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop_cache()
        os.close(self._root_fd)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _directory(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the directory ``parts`` below the root, created where missing,
        never following a symlink. The caller must not close it."""
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        self._drop_cache()
        fd = os.dup(self._root_fd)
        try:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._cached = (parts, fd)
        return fd

    def add(self, member: tarfile.TarInfo, content: IO[bytes] | None) -> None:
        """Write one member (``content``: the file's bytes for a regular file).

        Raises ExtractionRefused for a member the policy refuses; OSError as the system gives it.
        """
        if not self.policy.admit(member):
            raise ExtractionRefused(self.policy.problems[-1])
        if not member.name.startswith(DATA):
            return
        parts = tuple(_parts(member.name[len(DATA):]))
        if not parts:
            return
        if member.issym():
            self._links.append((parts, member.linkname, member))
            return
        parent = self._directory(parts[:-1])
        if member.isdir():
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode):
                    raise ExtractionRefused(f"{member.name}: refused: appears twice") from None
            self._directories.append((parts, member))
            return
        if self.budget is not None and self.written + member.size > self.budget:
            raise ExtractionRefused(f"{member.name}: refused: the bundle holds more bytes than were verified")
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        try:
            remaining = member.size
            while remaining > 0 and content is not None:
                block = content.read(min(_BLOCK, remaining))
                if not block:
                    raise ExtractionRefused(f"{member.name}: the bundle ends inside this member")
                _write_all(fd, block)
                remaining -= len(block)
            os.fchmod(fd, (member.mode & 0o755) | 0o600)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        self.written += member.size
        self.files += 1

    def finish(self) -> int:
        """Check the whole tree, create the symlinks, set directory times. Returns the count
        of members written. Raises ExtractionRefused when the tree is refused."""
        problems = self.policy.finish()
        if problems:
            raise ExtractionRefused(problems[0])
        for parts, target, member in self._links:
            parent = self._directory(parts[:-1])
            os.symlink(target, parts[-1], dir_fd=parent)
            os.utime(parts[-1], (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
        for parts, member in reversed(self._directories):
            parent = self._directory(parts[:-1])
            fd = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                os.fchmod(fd, (member.mode & 0o755) | 0o700)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
        return self.files + len(self._links) + len(self._directories)


def _write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]


def check_members(members: Iterable[tarfile.TarInfo]) -> list[str]:
    """The policy's problems with ``members`` (for tests and small listings)."""
    policy = MemberPolicy()
    for member in members:
        policy.admit(member)
    return policy.finish()

"""The bundle extraction policy against hostile archives: each case is a tar built here, extracted
with ``extract_data`` into an empty staging directory inside a sandbox, and nothing may appear
outside the staging directory."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from reconciler.kinds.projects.bundle import BundleError, extract_data
from reconciler.kinds.projects.bundle_safety import MAX_NAME_BYTES, check_members, resolve_link


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"",
            mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def path_max_chain(steps: str = "abcdefghijklmnop") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The CVE-2025-4517 shape under ``data/``: sixteen directories with 247-byte names, each
    reached through a one-letter symlink, so that resolving ``a/b/…/p`` physically passes PATH_MAX
    (non-strict realpath then gives up and reports a path inside); a link at the bottom climbing
    back to ``data``, and ``escape`` pointing one level above it; then a file written through it."""
    long_name = "d" * 247
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = "data"
    for step in steps:
        members.append(_member(f"{path}/{long_name}", tarfile.DIRTYPE, mode=0o755))
        members.append(_member(f"{path}/{step}", tarfile.SYMTYPE, linkname=long_name))
        path = f"{path}/{long_name}"
    climb = "data/" + "/".join(steps) + "/" + "l" * 254
    members.append(_member(climb, tarfile.SYMTYPE, linkname="../" * len(steps)))
    members.append(_member("data/escape", tarfile.SYMTYPE, linkname="/".join(steps) + "/" + "l" * 254 + "/.."))
    members.append(_member("data/escape/pwned", data=b"written outside the import path\n"))
    return members


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(sandbox, staging): staging is an empty directory inside sandbox; nothing else may appear."""
    staging = tmp_path / "inner" / "staging"
    staging.mkdir(parents=True)
    return tmp_path, staging


def _everything(root: Path) -> set[str]:
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def _outside(sandbox: Path, staging: Path) -> set[str]:
    outside = {path for path in _everything(sandbox) if not (sandbox / path).is_relative_to(staging)}
    return outside - {"inner", "inner/staging", "bundle.tar"}


def test_a_symlink_chain_past_path_max_writes_nothing_outside(sandbox):
    root, staging = sandbox
    bundle = _tar(root / "bundle.tar", path_max_chain())
    with pytest.raises(BundleError, match="refused"):
        extract_data(bundle, staging)
    assert _outside(root, staging) == set()
    assert not (root / "inner" / "pwned").exists()
    problems = check_members(info for info, _ in path_max_chain())
    assert any(f"longer than {MAX_NAME_BYTES} bytes" in p for p in problems), problems
    assert any("data/escape/pwned: refused: beneath the symlink data/escape" in p for p in problems), problems


def test_the_same_chain_with_short_enough_names_is_refused_for_writing_beneath_a_link(sandbox):
    root, staging = sandbox
    chain = path_max_chain("abcdefghijk")
    with pytest.raises(BundleError, match="beneath the symlink data/a"):
        extract_data(_tar(root / "bundle.tar", chain), staging)
    assert _outside(root, staging) == set()
    problems = check_members(info for info, _ in chain)
    assert any("data/escape/pwned: refused: beneath the symlink data/escape" in p for p in problems), problems


@pytest.mark.parametrize(("members", "message"), [
    ([_member("data/up", tarfile.SYMTYPE, linkname=".."), _member("data/up/x", data=b"x")], "beneath the symlink"),
    # the link comes after the member written beneath its name
    ([_member("data/x/y", data=b"x"), _member("data/x", tarfile.SYMTYPE, linkname="..")],
     "a symlink where the bundle has a directory"),
    # a link to a link that climbs: lexically inside, physically one level above data/
    ([_member("data/a/b", tarfile.DIRTYPE), _member("data/a/b/up", tarfile.SYMTYPE, linkname="../.."),
      _member("data/l", tarfile.SYMTYPE, linkname="a/b/up/..")], "data/l: refused: symlink"),
    ([_member("data/loop1", tarfile.SYMTYPE, linkname="loop2"), _member("data/loop2", tarfile.SYMTYPE,
                                                                            linkname="loop1")], "a loop"),
    ([_member("data/" + "x" * 256, data=b"x")], "component longer"),
    ([_member("data/" + "/".join(["y" * 200] * 16), data=b"x")], f"longer than {MAX_NAME_BYTES}"),
    ([_member("data/hard", tarfile.LNKTYPE, linkname="data/x")], "hard links are refused"),
    ([_member("data/s", data=b"#!", mode=0o4755)], "setuid"),
])
def test_hostile_trees_are_refused(sandbox, members, message):
    root, staging = sandbox
    with pytest.raises(BundleError, match=message):
        extract_data(_tar(root / "bundle.tar", members), staging)
    assert _outside(root, staging) == set()


def test_links_that_stay_inside_are_extracted_as_links(sandbox):
    root, staging = sandbox
    members = [_member("data/J1", tarfile.DIRTYPE, mode=0o755), _member("data/J1/out.cs", data=b"cs"),
               _member("data/J2", tarfile.DIRTYPE, mode=0o755),
               _member("data/J2/in.cs", tarfile.SYMTYPE, linkname="../J1/out.cs"),
               _member("data/J2/back", tarfile.SYMTYPE, linkname=".."),
               _member("data/J2/via", tarfile.SYMTYPE, linkname="back/J1/out.cs")]
    assert extract_data(_tar(root / "bundle.tar", members), staging) == 6
    assert (staging / "J2" / "in.cs").read_bytes() == b"cs" and os.readlink(staging / "J2" / "in.cs") == "../J1/out.cs"
    assert (staging / "J2" / "via").read_bytes() == b"cs"
    assert resolve_link("data/J2/via", {"data/J2/in.cs": "../J1/out.cs", "data/J2/back": "..",
                                        "data/J2/via": "back/J1/out.cs"}) == ["data", "J1", "out.cs"]


def test_more_bytes_than_verified_are_refused(sandbox):
    root, staging = sandbox
    bundle = _tar(root / "bundle.tar", [_member("data/a", data=b"x" * 100), _member("data/b", data=b"y" * 100)])
    with pytest.raises(BundleError, match="more bytes than were verified"):
        extract_data(bundle, staging, byte_budget=150)

"""The bundle's own tar writer: what ``export_bundle`` writes reads back through ``tarfile`` with
the headers ``tarfile.gettarinfo`` gives, verifies clean, and extracts to the same tree. Real
files; each compression."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from reconciler.kinds.projects.bundle import DATA, _reader, export_bundle, extract_data, verify_bundle
from reconciler.providers.cryosparc.model import Records


def _project(root: Path) -> Path:
    project = root / "P1"
    (project / "J1" / "sub").mkdir(parents=True)
    (project / "J1" / "big.mrc").write_bytes(os.urandom(3 << 20) + b"tail")  # several read blocks and a tail
    (project / "J1" / "sub" / "ünïcode name.cs").write_bytes(b"x" * 513)
    (project / "J1" / "empty").write_bytes(b"")
    os.link(project / "J1" / "empty", project / "J1" / "hard")
    (project / "W1").mkdir()
    (project / "W1" / "rel").symlink_to("../J1/big.mrc")
    (project / "W1" / "abs").symlink_to(project / "J1" / "sub")
    (project / "W1" / "outside").symlink_to("/etc/hostname")
    return project


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
def test_export_writes_tarfile_headers_and_the_bytes_verify_and_extract(tmp_path, suffix):
    project = _project(tmp_path)
    bundle = tmp_path / f"P1{suffix}"
    summary = export_bundle(bundle, Records({"uid": "P1"}, [], []), [], {"name": "a", "instance_id": "i"}, project,
                            key=b"k" * 16)
    assert summary["external_links"] == [{"path": "W1/outside", "target": "/etc/hostname"}]
    assert verify_bundle(bundle, key=b"k" * 16).problems == []
    with _reader(bundle) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        members = {member.name: member for member in tar}
    for name in ("J1", "J1/big.mrc", "J1/sub/ünïcode name.cs", "J1/empty", "W1/rel"):
        expected = tarfile.TarFile(os.devnull, "w").gettarinfo(str(project / name), arcname=DATA + name)
        found = members[DATA + name]
        assert (found.type, found.mode, found.size, found.linkname) == \
               (expected.type, expected.mode & 0o7777, expected.size, expected.linkname)
        assert found.mtime == pytest.approx(expected.mtime, abs=1e-6)
        assert (found.uid, found.gid, found.uname, found.gname) == (0, 0, "", "")
    assert members[DATA + "J1/hard"].isreg()  # a hard link: a file of its own
    assert members[DATA + "W1/abs"].linkname == "../J1/sub"  # absolute inside the project: made relative
    assert DATA + "W1/outside" not in members
    destination = tmp_path / "out"
    destination.mkdir()
    extract_data(bundle, destination)
    assert (destination / "J1/big.mrc").read_bytes() == (project / "J1/big.mrc").read_bytes()
    assert (destination / "J1/sub/ünïcode name.cs").read_bytes() == b"x" * 513
    assert os.readlink(destination / "W1/rel") == "../J1/big.mrc"
    assert list(tmp_path.glob(".*.partial")) == []

"""Progress of real runs without a terminal: a copy's last line names files and bytes."""

from __future__ import annotations

from tests.integration.conftest import make_tree


def test_a_copy_logs_its_files_and_bytes(site):
    make_tree(site.root / "origin", {"a/1.fits": "x" * 1000, "a/2.fits": "y" * 2000, "b/3.fits": "z" * 3000})
    (site.root / "replica").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\nsettle = "1s"\n\n[replicas."replica"]\n')
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    lines = [line.split(" INFO ", 1)[-1] for line in result.err.splitlines()]
    assert "copy replica:replica from exao1: 3 of 3 files, 5.9 KiB of 5.9 KiB" in lines
    assert len(lines) == len(set(lines))  # no line twice
    assert not any(line.startswith("scan origin:") for line in lines)  # a short scan says nothing

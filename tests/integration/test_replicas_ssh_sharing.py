"""ssh connection sharing against a real sshd on 127.0.0.1: one login per host for a run,
nothing left behind, and a server that refuses extra sessions still gets every file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.integration.conftest import make_tree, running_commands, sshd_or_skip, tree

FILES = {"telem/a.bin": "alpha", "telem/b.bin": "beta", "logs/c d.txt": "gamma", "-e.bin": "delta",
         "rawimages/e.fits": b"\x01" * 5000}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    commands = (b" ".join(argv).decode(errors="replace") for _, argv in running_commands())
    return [command for command in commands if text in command]


def write_config(site, sshd, remote: Path, share: bool) -> None:
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(remote)}"]\nverify_every = "1s"\ncopy_batch_files = 2\n\n'
               + sshd.toml() + f"share_connections = {str(share).lower()}\n")


def test_a_run_logs_in_once_per_host_and_leaves_nothing_behind(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "shared").mkdir()
    (site.root / "unshared").mkdir()
    scratch = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths are limited
    try:
        write_config(site, sshd, site.root / "shared", share=True)
        before = sshd.logins()
        result = site.run("reconcile", env={"TMPDIR": str(scratch)})
        assert result.code == 0, result.err
        assert tree(site.root / "shared/exao1") == tree(site.root / "origin")
        # The probe, the verification listing and three rsync batches, twice (plan, then
        # apply's own observation): all in one connection.
        assert sshd.logins() - before == 1
        assert os.listdir(scratch) == [], "the control directory was not removed"
        assert processes_mentioning(str(scratch)) == [], "an ssh master outlived the run"

        write_config(site, sshd, site.root / "unshared", share=False)
        before = sshd.logins()
        result = site.run("reconcile", env={"TMPDIR": str(scratch)})
        assert result.code == 0, result.err
        assert tree(site.root / "unshared/exao1") == tree(site.root / "origin")
        assert sshd.logins() - before >= 5
        assert os.listdir(scratch) == []
    finally:
        os.rmdir(scratch)


def test_a_server_refusing_shared_sessions_still_gets_every_file(site, tmp_path_factory):
    # Three 16 MiB files, one per batch, two batches at a time: the second of two running
    # batches asks the master for a second session, which MaxSessions 1 refuses.
    make_tree(site.root / "origin", {f"big{index}.bin": os.urandom(1 << 24) for index in range(3)})
    (site.root / "remote").mkdir()
    with sshd_or_skip(tmp_path_factory.mktemp("sshd-one-session"), "MaxSessions 1\n") as server:
        site.write('[origins.exao1]\nroot = "origin"\n\n'
                   f'[replicas."{server.url(site.root / "remote")}"]\ncopy_batch_files = 1\ncopy_jobs = 2\n\n'
                   + server.toml())
        result = site.run("reconcile")
        assert result.code == 0, result.err
        assert tree(site.root / "remote/exao1") == tree(site.root / "origin")
        assert server.logins() >= 2, "no session was refused: this test did not test the fallback"

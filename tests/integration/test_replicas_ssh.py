"""Replicas over ssh: a real sshd on 127.0.0.1 (started by a fixture), real ssh and rsync."""

from __future__ import annotations

import json

from tests.integration.conftest import make_tree, tree

FILES = {"telem/a.bin": "alpha", "rawimages/b b.fits": b"\x01" * 5000, "odd\nname": "x",
         "-dash:colon.bin": "y", "ünï/naïve.txt": "z"}


def test_ssh_origin_to_local_replica(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "backup").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\n\n[replicas."backup"]\n\n' + sshd.toml())
    plan = site.cli("plan")
    assert "5 files new on origin exao1" in plan.out, plan.out + plan.err
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "backup/exao1") == tree(site.root / "origin")
    assert site.cli("plan", "--detailed-exitcode").code == 0


def test_local_origin_to_ssh_replica_with_verification(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "remote").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\nverify_every = "1s"\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")
    (site.root / "remote/exao1/telem/a.bin").unlink()
    import time

    time.sleep(1.1)
    plan = site.cli("plan")
    assert "1 missing or different on the replica (drift)" in plan.out, plan.out
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")


def test_ssh_origin_to_ssh_replica_runs_rsync_on_the_origin_host(site, sshd):
    make_tree(site.root / "origin", FILES)
    (site.root / "remote").mkdir()
    site.write(f'[origins.exao1]\nroot = "{sshd.url(site.root / "origin")}"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 0, result.err
    assert tree(site.root / "remote/exao1") == tree(site.root / "origin")


def test_enrolment_from_an_ssh_replica(site, sshd):
    make_tree(site.root / "remote/exao3", {"2019/old.dat": "archived long ago"})
    make_tree(site.root / "origin", {"a": "1"})
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "remote")}"]\nimport_origins = true\n\n' + sshd.toml())
    plan = site.cli("plan")
    assert "+ enroll: 1 files already on the replica for origin exao3" in plan.out, plan.out + plan.err
    assert site.cli("reconcile").code == 0
    rows = json.loads(site.cli("replicas", "list", "--json").out)
    assert rows[0]["files"] == 2


def test_an_unreachable_host_fails_only_its_address(site, sshd):
    make_tree(site.root / "origin", {"a": "1"})
    (site.root / "backup").mkdir()
    site.write('[origins.exao1]\nroot = "origin"\n\n[replicas."backup"]\n\n'
               '[replicas."ssh://127.0.0.1:1/nowhere"]\n\n' + sshd.toml())
    result = site.cli("reconcile")
    assert result.code == 1
    assert "replica:ssh://127.0.0.1:1/nowhere: cannot reach 127.0.0.1 over ssh" in result.err
    assert (site.root / "backup/exao1/a").read_text() == "1"


def test_an_unreachable_origin_is_one_clean_error(site, sshd):
    (site.root / "backup").mkdir()
    site.write('[origins.exao9]\nroot = "ssh://127.0.0.1:1/opt/MagAOX"\n\n[replicas."backup"]\n\n' + sshd.toml())
    result = site.cli("plan")
    assert result.code == 1
    assert "replica:backup: origin exao9: cannot reach 127.0.0.1 over ssh" in result.out, result.out
    assert result.err == "", result.err  # no traceback from a thread after the error


def test_a_missing_remote_directory_is_reported(site, sshd):
    make_tree(site.root / "origin", {"a": "1"})
    site.write('[origins.exao1]\nroot = "origin"\n\n'
               f'[replicas."{sshd.url(site.root / "not-mounted")}"]\n\n' + sshd.toml())
    result = site.cli("plan")
    assert result.code == 1
    assert "not-mounted does not exist or is not a directory; create or mount it" in result.out

"""ssh connection sharing: which options ssh gets, which settings share a control directory,
and that closing removes them. (Against a real sshd: tests/integration/test_replicas_ssh_sharing.py.)"""

from __future__ import annotations

import os
import tempfile

import pytest

from reconciler.providers import ssh as connections
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.rsync import copy_invocation


@pytest.fixture(autouse=True)
def _closed_after():
    yield
    connections.close_all()


def test_sharing_adds_control_options_after_the_operators_own():
    settings = SshSettings(options=("ControlMaster=no",), share_connections=True, control_dir="/tmp/r")
    args = settings.base_args()
    # ssh keeps the first value it is given: the operator's "ControlMaster=no" wins.
    assert args.index("ControlMaster=no") < args.index("ControlMaster=auto")
    assert "ControlPath=/tmp/r/%C" in args and any(arg.startswith("ControlPersist=") for arg in args)
    assert not any(arg.startswith("Control") for arg in SshSettings().base_args())


REMOTE = [Location("/data"), Location("/backup", "popeye")]


def test_equal_settings_share_a_directory_and_different_ones_do_not():
    first = connections.shared(SshSettings(identity_file="/k", share_connections=True), REMOTE)
    again = connections.shared(SshSettings(identity_file="/k", share_connections=True), REMOTE)
    other = connections.shared(SshSettings(identity_file="/other", share_connections=True), REMOTE)
    assert first.control_dir and first.control_dir == again.control_dir
    assert other.control_dir and other.control_dir != first.control_dir
    assert os.stat(first.control_dir).st_mode & 0o777 == 0o700
    assert connections.shared(SshSettings(share_connections=False), REMOTE).control_dir is None
    connections.close_all()
    assert not os.path.exists(first.control_dir) and not os.path.exists(other.control_dir)


def test_a_run_without_ssh_makes_no_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = connections.shared(SshSettings(share_connections=True), [Location("/data"), Location("/backup")])
    assert settings.control_dir is None and os.listdir(tmp_path) == []


def test_a_temporary_directory_too_long_for_a_socket_falls_back_to_tmp(monkeypatch, tmp_path):
    deep = tmp_path / ("x" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    settings = connections.shared(SshSettings(share_connections=True), REMOTE)
    assert settings.control_dir is not None and os.path.dirname(settings.control_dir) == "/tmp"
    socket_path = f"{settings.control_dir}/{'0' * 40}.{'r' * 16}"
    assert len(socket_path) <= 107


def test_the_hop_from_the_origin_host_never_names_this_hosts_control_directory():
    settings = connections.shared(SshSettings(share_connections=True), REMOTE)
    invocation = copy_invocation(Location("/opt/MagAOX", "exao1"), Location("/backup", "popeye"), "exao1", settings)
    outer, inner = invocation.argv[:-1], invocation.argv[-1]
    assert f"ControlPath={settings.control_dir}/%C" in outer  # the ssh to the origin host is shared
    assert "Control" not in inner  # the origin host's own ssh to the replica: its own business

"""An origin's name is one directory on every replica: anything else is a config error, and
nothing is copied (a name like '../escaped' once copied into a sibling of the replica root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke_cli


@pytest.mark.parametrize(("name", "message"), [
    ("../escaped", "holds a path separator"), (".", "is '.' or '..'"), ("..", "is '.' or '..'"),
    ("a/b", "holds a path separator"), ("-rf", "starts with '-'"), ("tab\there", "control character"),
])
def test_unsafe_origin_names_are_config_errors_and_nothing_is_copied(tmp_path: Path, capsys, name, message):
    (tmp_path / "data" / "src").mkdir(parents=True)
    (tmp_path / "data" / "src" / "a.fits").write_text("x")
    (tmp_path / "data" / "backup").mkdir()
    config = tmp_path / "data" / "reconciler.toml"
    escaped = name.replace("\\", "\\\\").replace("\t", "\\t")
    config.write_text(f'[origins."{escaped}"]\nroot = "src"\nsettle = "0s"\n\n[replicas."backup"]\n')
    for command in (["validate"], ["apply", "--auto-approve"]):
        result = invoke_cli(["--config", str(config), *command], capsys)
        assert result.code == 1, result
        assert "reconciler.toml:1:1: origin name" in result.err and message in result.err, result.err
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["backup", "reconciler.toml", "src"]
    assert list((tmp_path / "data" / "backup").iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_an_ssh_host_that_looks_like_an_option_is_a_config_error(tmp_path: Path, capsys):
    config = tmp_path / "reconciler.toml"
    (tmp_path / "backup").mkdir()
    config.write_text('[origins.exao1]\nroot = "ssh://-oProxyCommand=touch${IFS}x/opt"\n\n[replicas."backup"]\n')
    result = invoke_cli(["--config", str(config), "validate"], capsys)
    assert result.code == 1 and "starts with '-', which ssh would take for an option" in result.err

"""Where the state lives: read-only commands never create a state database, and a state
database named in a directory that does not exist is refused with the fix, for every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke_cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "disk").mkdir()
    path = tmp_path / "reconciler.toml"
    path.write_text('[origins.o]\nroot = "src"\n\n[replicas."disk"]\n')
    return path


@pytest.mark.parametrize("command", [["history"], ["history", "--json"], ["replicas", "list"],
                                     ["inventory", "stats"], ["force-unlock", "L-1"]])
def test_read_only_commands_never_create_a_state_database(config, capsys, command):
    result = invoke_cli(["--config", str(config), *command], capsys)
    assert result.code in (0, 1), result
    assert not (config.parent / "state").exists(), command
    if command == ["history"]:
        assert result.out == "No runs in the journal yet.\n"


@pytest.mark.parametrize("command", [["plan"], ["history"], ["apply", "--auto-approve"], ["replicas", "list"]])
def test_a_state_database_in_a_missing_directory_is_refused_with_the_fix(config, capsys, command, tmp_path):
    missing = tmp_path / "no-such-dir" / "state.db"
    result = invoke_cli(["--config", str(config), "--state", f"sqlite:///{missing}", *command], capsys)
    assert result.code == 1
    assert f"would be in {missing.parent}, which does not exist; create that directory" in result.err
    assert not missing.parent.exists()


def test_the_default_state_directory_is_still_made_by_a_run(config, capsys):
    assert invoke_cli(["--config", str(config), "plan"], capsys).code == 0
    assert (config.parent / "state" / "reconciler.db").exists()

"""Engine test fixtures: a workspace with a toy-kind config and its world directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CliWorkspace, Result, run_cli

TOY_PLUGIN = "tests.engine.toykind:ToyKind"


@dataclass
class Workspace(CliWorkspace):
    """A config file using the toy kind, its world directory and its state database."""

    @property
    def world(self) -> Path:
        return self.root / "world"

    def write_config(self, files: dict[str, dict[str, object]] | None = None, extra: str = "") -> None:
        lines = ['[toy]', 'dir = "world"', ""]
        for name, spec in (files or {}).items():
            lines.append(f"[toy.files.{name}]")
            for key, value in spec.items():
                if isinstance(value, bool):
                    lines.append(f"{key} = {str(value).lower()}")
                elif isinstance(value, list):
                    lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
                else:
                    lines.append(f'{key} = "{value}"')
            lines.append("")
        self.config.write_text("\n".join(lines) + textwrap.dedent(extra))

    def run(self, *command: str, timeout: float = 120) -> Result:
        """Run the CLI as a separate process."""
        return run_cli(self.args(*command), env={"RECONCILER_PLUGINS": TOY_PLUGIN}, timeout=timeout)

    def files(self) -> dict[str, str]:
        return {path.name: path.read_text() for path in sorted(self.world.iterdir())
                if path.is_file() and not path.name.startswith(".")}


@pytest.fixture
def workspace(tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Workspace:
    monkeypatch.setenv("RECONCILER_PLUGINS", TOY_PLUGIN)
    space = Workspace(tmp_path, state_url, capsys)
    space.world.mkdir()
    return space


WorkspaceFactory = Callable[..., Workspace]

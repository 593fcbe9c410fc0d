"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_the_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    assert commands[0].startswith("python3 -m venv .venv && .venv/bin/pip install -e . && "
                                  ".venv/bin/reconciler --config examples/quickstart.toml")
    assert commands[1].startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && ")


def test_ci_runs_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert _setup_commands()[1] in ci


def test_the_readmes_config_example_validates(tmp_path):
    import os
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    example = text.split("## The config", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "reconciler.toml").write_text(example)
    result = subprocess.run([sys.executable, "-m", "reconciler", "--config", str(tmp_path / "reconciler.toml"),
                             "validate"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "CRYOSPARC_DB_URI": "mongodb://db.example.org/meteor"})
    assert result.returncode == 0, result.stderr

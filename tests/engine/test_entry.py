"""The program's entry point: the collector is on again when the command runs, and what
start-up loaded is frozen out of later collections."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from reconciler.cli import entry


def test_the_command_runs_with_the_collector_on_and_the_start_up_frozen(monkeypatch):
    seen = {}

    def command() -> None:
        seen["enabled"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()
        raise SystemExit(0)

    monkeypatch.setattr("reconciler.cli.main.main", command)
    try:
        with pytest.raises(SystemExit):
            entry.main()
    finally:
        gc.unfreeze()
    assert seen["enabled"] and seen["frozen"] > 10_000


def test_python_dash_m_goes_through_the_entry_point():
    done = subprocess.run([sys.executable, "-c", "import runpy, gc, sys; sys.argv = ['reconciler', 'init', '--list'];"
                           "exit_code = 0\n"
                           "try: runpy.run_module('reconciler', run_name='__main__')\n"
                           "except SystemExit as stop: exit_code = stop.code\n"
                           "print(exit_code, gc.isenabled(), gc.get_freeze_count() > 10000)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "0 True True", done.stdout + done.stderr


def test_the_committed_top_level_help_is_what_click_prints(monkeypatch, capsys):
    """--help is answered from reconciler/cli/help.txt without loading the rest (0.05 s instead of
    0.5 s); this keeps that text equal to the real one."""
    from tests.conftest import REPO, invoke_cli

    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    real = invoke_cli(["--help"], capsys).out
    committed = (REPO / "reconciler" / "cli" / "help.txt").read_text()
    assert committed == real, ("run: env -u RECONCILER_PLUGINS COLUMNS=80 python -c \"from reconciler.cli.main "
                               "import main; main(['--help'])\" > reconciler/cli/help.txt")


def test_version_and_help_are_answered_without_loading_the_rest():
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = ("import sys, runpy\nsys.argv = ['reconciler', '{arg}']\n"
             "try:\n    runpy.run_module('reconciler', run_name='__main__')\nexcept SystemExit as e:\n"
             "    assert e.code in (0, None), e.code\n"
             "heavy = [m for m in ('sqlalchemy', 'pydantic', 'click', 'jinja2', 'pymongo', 'sqlmodel') if m in sys.modules]\n"
             "print('HEAVY', heavy)\n")
    for arg in ("--version", "--help"):
        result = subprocess.run([sys.executable, "-c", probe.format(arg=arg)], capture_output=True, text=True,
                                cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
        assert "HEAVY []" in result.stdout, result.stdout
        assert ("reconciler, version" if arg == "--version" else "Usage: reconciler") in result.stdout

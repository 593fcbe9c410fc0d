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
    done = subprocess.run([sys.executable, "-c", "import runpy, gc, sys; sys.argv = ['reconciler', '--version'];"
                           "exit_code = 0\n"
                           "try: runpy.run_module('reconciler', run_name='__main__')\n"
                           "except SystemExit as stop: exit_code = stop.code\n"
                           "print(exit_code, gc.isenabled(), gc.get_freeze_count() > 10000)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "0 True True", done.stdout + done.stderr

"""The README's first set-up command, run as written on the system's externally managed Python
(Debian's /usr/bin/python3, which carries the EXTERNALLY-MANAGED marker): it must install into
its own virtual environment and run the quickstart, and a second run must find nothing to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_readme_promise import _setup_commands

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _externally_managed() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    stdlib = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return bool(stdlib) and (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


@pytest.mark.slow
@pytest.mark.skipif(not _externally_managed(), reason="no externally managed system Python at /usr/bin/python3")
def test_the_first_setup_command_works_on_an_externally_managed_python(tmp_path: Path):
    copy = tmp_path / "reconciler"
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    environment = {"HOME": str(tmp_path), "PATH": f"{SYSTEM_PYTHON.parent}:/bin:/usr/sbin:/sbin"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:
            environment[key] = os.environ[key]

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], cwd=copy, env=environment, capture_output=True, text=True,
                              timeout=600, check=False)

    refused = run("python3 -m pip install -e .")
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr
    command = _setup_commands()[0]
    first = run(command)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Apply complete" in first.stderr
    assert sorted(path.name for path in (copy / "state" / "quickstart-backup" / "exao1").rglob("*") if path.is_file())
    again = run(command)
    assert again.returncode == 0 and "converged" in again.stderr, again.stderr[-2000:]

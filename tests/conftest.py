"""Fixtures shared by all tests: state databases (SQLite and PostgreSQL), CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests assert behaviour, never speed: no per-example deadline (hypothesis's default of
# 200 ms fails them on a loaded CI machine), and no "too slow" health check either.
settings.register_profile("reconciler", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reconciler")

@pytest.fixture(autouse=True)
def _secrets_of_one_test_only() -> Iterator[None]:
    """Secrets a run remembers (reconciler/secrets.py) live as long as its process; in a test process
    each test is a run of its own (a password a property test made up must not redact "true" in a
    later test's report)."""
    from reconciler import secrets

    yield
    secrets.forget_all()


REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_admin_url() -> str | None:
    """A PostgreSQL URL we may create databases with: $RECONCILER_TEST_PG_URL, or one on 127.0.0.1:5432."""
    url = os.environ.get("RECONCILER_TEST_PG_URL", DEFAULT_PG)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2, autocommit=True) as connection:
            connection.execute("select 1")
        return url
    except Exception:
        return None


_PG = _pg_admin_url()


EVERY_STATE = os.environ.get("RECONCILER_TEST_EVERY_STATE", "") not in ("", "0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Which state databases a test that uses ``state_url`` runs against.

    SQLite always. PostgreSQL too for a test marked ``state_store``: one whose outcome depends on
    what the state database does (schema and its upgrades, locks, concurrent writes, the
    inventory's queries, the journal, history, checkpoints that must survive a kill -9), and for
    one end-to-end test of each kind, so every kind's tables are written on PostgreSQL. Other
    tests only pass a state along; running them twice doubled the suite's time and tested
    PostgreSQL no further. RECONCILER_TEST_EVERY_STATE=1 runs every test against both.
    """
    if "state_url" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        if "state_url" in str(mark.args[0]).replace(" ", "").split(","):
            return  # the test chose its databases itself (tests/integration/test_hosts.py: PostgreSQL only)
    both = EVERY_STATE or metafunc.definition.get_closest_marker("state_store") is not None
    params: list[object] = ["sqlite"]
    if both:
        params.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    metafunc.parametrize("state_url", params, indirect=True)


@pytest.fixture
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty state database: SQLite in tmp_path, or (where reachable) a new PostgreSQL database.

    Parametrised by pytest_generate_tests above."""
    if request.param == "sqlite":
        (tmp_path / "state").mkdir(exist_ok=True)  # a state named explicitly must be in an existing directory
        yield f"sqlite:///{tmp_path / 'state' / 'reconciler.db'}"
        return
    if _PG is None:
        pytest.skip("no PostgreSQL reachable (set RECONCILER_TEST_PG_URL or run one on 127.0.0.1:5432)")
    import psycopg

    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_PG, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = _PG.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(_PG, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """Run the CLI in this process (fast): exit code, stdout and stderr captured."""
    from reconciler.cli.main import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> Result:
    """Run the real `reconciler` program in a subprocess (real exit codes, real signals)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class CliWorkspace:
    """A directory with a reconciler.toml and a state database, and ways to run the CLI on them."""

    root: Path
    state_url: str
    capsys: pytest.CaptureFixture[str]

    @property
    def config(self) -> Path:
        return self.root / "reconciler.toml"

    def args(self, *command: str) -> list[str]:
        return ["--config", str(self.config), "--state", self.state_url, *command]

    def cli(self, *command: str) -> Result:
        """Run the CLI in this process (fast); exit code, stdout and stderr captured."""
        return invoke_cli(self.args(*command), self.capsys)


def popen_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )

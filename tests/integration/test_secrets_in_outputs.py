"""A password spelled any way a user may spell it never reaches an output: plans (text, JSON,
markdown, saved files), errors, logs, the journal, the report. Real program, real files; the
database is a closed port on 127.0.0.1, so every command fails to connect and says so."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.conftest import Site

SPELLINGS = [
    "MONGODB://svc:{pw}@127.0.0.1:{port}/meteor",
    "MongoDB+srv://svc:{pw}@127.0.0.1:{port}/meteor",
    "mongodb://svc:{pw}/slash@127.0.0.1:{port}/meteor",
    "mongodb://svc:{pw}@at@127.0.0.1:{port}/meteor?authSource=admin",
    "mongodb://svc:{pw}:colon?q#h@127.0.0.1:{port},127.0.0.1:{port}/meteor",
    "mongodb://svc:{pw} with spaces@127.0.0.1:{port}/meteor",
]
PASSWORD = "Xq7-cor8ect-h0rse"


@pytest.fixture
def one_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    """A workspace with SQLite state only: what is checked is output, not the state store."""
    (tmp_path / "state").mkdir(exist_ok=True)
    return Site(tmp_path, f"sqlite:///{tmp_path / 'state' / 'reconciler.db'}", capsys)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_no_output_holds_the_password(one_site, spelling):
    site = one_site
    uri = spelling.format(pw=PASSWORD, port=_closed_port())
    backups = site.root / "backups"
    backups.mkdir()
    site.write(f'[databases.meteor]\nuri_env = "METEOR_URI"\ndatabase = "meteor"\nconnect_timeout = "1s"\n'
               f'[databases.meteor.backup]\nto = "{backups}"\n')
    env = {"METEOR_URI": uri}
    saved = site.root / "p.json"
    outputs = []
    for command in (["plan"], ["plan", "--format", "markdown"], ["plan", "-o", str(saved)],
                    ["-v", "reconcile"], ["history", "--json"], ["report", "--html", str(site.root / "r.html")]):
        result = site.run(*command, env=env)
        outputs.append((command, result.out + result.err))
    outputs.append((["saved plan"], saved.read_text() if saved.exists() else ""))
    outputs.append((["report"], (site.root / "r.html").read_text() if (site.root / "r.html").exists() else ""))
    assert any("svc:***@" in text for _, text in outputs), outputs  # the commands did talk about the URI
    for command, text in outputs:
        for piece in (PASSWORD, PASSWORD[:8], PASSWORD[-8:]):
            assert piece not in text, (command, text)


@pytest.mark.parametrize("spelling", SPELLINGS[:3])
def test_a_password_written_into_the_config_is_refused_without_being_shown(one_site, spelling):
    site = one_site
    uri = spelling.format(pw=PASSWORD, port=_closed_port())
    site.write(f'[databases.meteor]\nuri = "{uri}"\ndatabase = "meteor"\n')
    for command in (["validate"], ["plan"]):
        result = site.run(*command)
        assert result.code == 1, result
        assert "holds a password" in result.err and PASSWORD not in result.out + result.err

"""The no-change memo's pure parts: which command lines a replay understands, which state
database it reads, and how memos of several kinds combine (engine/memo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from reconciler.engine.kind import Observation
from reconciler.engine.memo import Invocation, Memo, combined, parse, state_database
from reconciler.state.store import resolve_state_url


@pytest.mark.parametrize("argv, expected", [
    (["plan"], Invocation("plan", None, None)),
    (["--config", "r.toml", "plan", "--detailed-exitcode"], Invocation("plan", "r.toml", None)),
    (["--config=r.toml", "--state=sqlite:///s.db", "plan", "--format", "text"],
     Invocation("plan", "r.toml", "sqlite:///s.db")),
    (["--state", "sqlite:///s.db", "reconcile", "--allow-destroy", "--lock-timeout", "5m"],
     Invocation("reconcile", None, "sqlite:///s.db")),
    (["--config", "plan", "plan"], Invocation("plan", "plan", None)),  # a config file named "plan"
])
def test_command_lines_a_replay_understands(argv, expected):
    assert parse(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["--version"], ["apply", "--auto-approve"], ["validate"],
    ["-v", "plan"], ["plan", "-v"], ["plan", "--full-scan"], ["plan", "--target", "replica:*"],
    ["plan", "-o", "p.json"], ["plan", "--format", "json"], ["plan", "--format=markdown"],
    ["reconcile", "--watch", "5m"], ["reconcile", "--full-scan"], ["plan", "extra"],
    ["--config"], ["plan", "--format"], ["plan", "--detailed-exitcode=yes"], ["--config", "r.toml"],
    ["plan", "--config", "r.toml"],  # global options go before the command
])
def test_anything_else_runs_in_full(argv):
    assert parse(argv) is None


@pytest.mark.parametrize("config_dir", ["conf", "data ?#%20 100%"])
def test_the_state_database_is_the_one_the_full_run_would_open(tmp_path, config_dir):
    config_dir = tmp_path / config_dir
    cases = [
        (None, {}, {}),
        (None, {}, {"url": "sqlite:///elsewhere/s.db"}),
        (None, {}, {"url": f"sqlite:///{tmp_path}/abs.db"}),
        (None, {}, {"url": "sqlite:///with space%20and%25percent #1.db"}),  # escapes decoded, as SQLAlchemy does
        ("sqlite:///cli.db", {}, {"url": "sqlite:///ignored.db"}),
        (None, {"RECONCILER_STATE": "sqlite:///from-env.db"}, {}),
        (None, {"STATE_URL": "sqlite:///named.db"}, {"url_env": "STATE_URL"}),
    ]
    for option, environ, section in cases:
        found = state_database(option, environ, config_dir, section)
        chosen = option or environ.get("RECONCILER_STATE")
        if not chosen and section.get("url_env"):
            chosen = environ[section["url_env"]]
        opened = make_url(resolve_state_url(chosen, config_dir, section.get("url"))).database
        assert found is not None and str(found) == opened, (option, environ, section)


@pytest.mark.parametrize("option, section", [
    ("postgresql+psycopg://u@h/db", {}),
    (None, {"url": "postgresql+psycopg://u@h/db"}),
    (None, {"url": "sqlite:///s.db?timeout=5"}),
    (None, {"url": "sqlite://"}),
    (None, {"url": "sqlite:///:memory:"}),
    (None, {"url_env": "UNSET_VARIABLE"}),
    (None, {"url": 5}),
])
def test_no_replay_for_other_states(option, section):
    assert state_database(option, {}, Path("/conf"), section) is None


def test_memos_combine_only_when_every_kind_offers_one():
    class Named:
        def __init__(self, name):
            self.name = name

    kinds = [Named("a"), Named("b"), Named("c")]
    first = Memo(directories=[("/o", 1)], facts=[("SELECT 1", {}, "x")], valid_until=200.0)
    second = Memo(writable=[("/r", 1, 2)], programs=[("rsync", "/usr/bin/rsync")], valid_until=100.0)
    observations = {"a": Observation(memo=first), "b": Observation(memo=second), "c": Observation(memo=Memo())}
    total = combined(kinds, observations)
    assert total == Memo(directories=[("/o", 1)], writable=[("/r", 1, 2)], programs=[("rsync", "/usr/bin/rsync")],
                         facts=[("SELECT 1", {}, "x")], valid_until=100.0)  # the earliest deadline
    observations["c"] = Observation()
    assert combined(kinds, observations) is None
    assert combined(kinds[2:], {"c": Observation(memo=Memo())}).valid_until is None


def test_the_replay_reads_the_tables_the_state_store_makes():
    from reconciler.engine import memo
    from reconciler.state.tables import LockRecord, MemoRecord

    assert (memo.TABLE, memo.LOCK_TABLE) == (MemoRecord.__tablename__, LockRecord.__tablename__)


@pytest.mark.parametrize(("given", "expected"), [
    (["plan", "--config", "x.toml"], ["--config", "x.toml", "plan"]),
    (["plan", "--config=x.toml", "-v", "--format", "json"], ["--config=x.toml", "-v", "plan", "--format", "json"]),
    (["-v", "reconcile", "--state", "s", "--allow-destroy"], ["-v", "--state", "s", "reconcile", "--allow-destroy"]),
    (["--config", "a", "backups", "restore", "X", "--log-format", "json"],
     ["--config", "a", "--log-format", "json", "backups", "restore", "X"]),
    (["sessions", "files", "--", "--config"], ["sessions", "files", "--", "--config"]),
    (["--version"], ["--version"]),
    ([], []),
])
def test_global_options_after_the_command_move_before_it(given, expected):
    from reconciler.cli.argv import global_options_first

    assert global_options_first(given) == expected

"""Durations, sizes, plan rendering and secrets: pure helpers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from reconciler.engine.actions import Action, Plan, summarize
from reconciler.render import render_plan, summary_line
from reconciler.state.store import redact_url, resolve_state_url
from reconciler.units import Size, format_duration, human_bytes, parse_duration


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400),
                                          ("2w", 1209600), ("1h30m", 5400), ("1.5h", 5400), (" 2d 12h ", 216000)])
def test_durations_as_humans_write_them(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "1y", "-1d", "h", "1d-", 5])
def test_bad_durations_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="write a number and a unit, one of s, m, h, d, w"):
        parse_duration(text)


class _Sized(BaseModel):
    size: Size


@pytest.mark.parametrize("text,size", [("50MiB", 50 << 20), ("2TB", 2 * 10**12), (1000, 1000), ("1.5KiB", 1536)])
def test_sizes_as_humans_write_them(text, size):
    assert _Sized(size=text).size == size


@pytest.mark.parametrize("text", ["fast", "5 parsecs", "MiB", -5])
def test_bad_sizes_say_how_to_write_one(text):
    with pytest.raises(ValidationError, match=r'write a number of bytes, or a number and a unit \(e.g. "50MiB"'):
        _Sized(size=text)


@given(st.integers(min_value=0, max_value=10**9))
def test_formatting_a_duration_round_trips(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_human_bytes():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(6012954214) == "5.6 GiB"


def _plan(*actions: Action) -> Plan:
    return Plan(config_sha256="0" * 64, actions=list(actions), summary=summarize(list(actions)))


def test_summary_line_counts_files_bytes_and_destructive():
    copy_a = Action.create(address="replica:/mnt/a", kind="copy", reason="r", facts=1,
                           details={"files": [f"f{i}" for i in range(1000)], "bytes": 5 * 1024**3})
    copy_b = Action.create(address="replica:/mnt/b", kind="copy", reason="r", facts=2,
                           details={"file_count": 204, "bytes": 644245094})
    backup = Action.create(address="database:cs", kind="backup", reason="r", facts=3)
    prune = Action.create(address="database:cs", kind="prune", reason="r", facts=4, destructive=True)
    plan = _plan(copy_a, copy_b, backup, prune)
    assert summary_line(plan) == "Plan: 2 copy (1,204 files, 5.6 GiB), 1 backup, 1 prune (destructive)."
    text = render_plan(plan)
    assert "Destructive (need --allow-destroy): database:cs (prune)." in text
    assert "files: 1,000 (f0, f1, f2, … 997 more)" in text  # a million paths never flood the terminal


def test_empty_plan_says_so():
    assert summary_line(_plan()) == "No changes. Everything matches the configuration."


def test_urls_are_redacted():
    assert redact_url("postgresql+psycopg://ops:s3cret@db/reconciler") == "postgresql+psycopg://ops:***@db/reconciler"


def test_relative_sqlite_state_resolves_against_the_config(tmp_path):
    assert resolve_state_url(None, tmp_path) == f"sqlite:///{tmp_path}/state/reconciler.db"
    assert resolve_state_url(None, tmp_path, "sqlite:///../elsewhere.db") == f"sqlite:///{tmp_path}/../elsewhere.db"
    assert resolve_state_url("sqlite:////abs.db", tmp_path, "sqlite:///x.db") == "sqlite:////abs.db"


def test_state_url_from_the_environment(tmp_path, monkeypatch):
    from reconciler.errors import ConfigError

    monkeypatch.setenv("STATE_URL", "postgresql+psycopg://u:p@h/db")
    assert resolve_state_url(None, tmp_path, None, "STATE_URL") == "postgresql+psycopg://u:p@h/db"
    monkeypatch.delenv("STATE_URL")
    with pytest.raises(ConfigError, match=r"\$STATE_URL, which is not set"):
        resolve_state_url(None, tmp_path, None, "STATE_URL")

"""The no-change memo: a run that found nothing to do, replayed while nothing it rests on changed.

Most runs of ``reconcile`` from cron, and of ``plan`` in a loop, find nothing to do. When
one does, and every resource kind can name what its "nothing to do" rests on (a
``Memo``: directories that must keep their mtimes, replica roots that must still be the
same writable directories, programs that must still be on PATH, rows of the state
database that must read the same, and a time by which something falls due anyway), the
engine stores that in the state database with the plan's text. The next ``plan`` or
``reconcile`` of the same config checks all of it before loading anything heavy (no
pydantic, SQLAlchemy or kinds: just ``sqlite3``, ``tomllib`` and ``os.stat``) and, when
every check holds, prints the same result without observing again.

Replaying is sound because the checks are the observers' own premises: a kind offers a
memo only where its own fast path would skip every read given those same facts (for
replicas: immutable local origins, every directory settled and recorded, every replica
complete at its origin's generation). Anything else (another config, another version
of reconciler, a lock held (for reconcile), a changed row or directory, a deadline passed, an option the
replay does not know, a PostgreSQL state) means the normal run, which writes a new memo
if it again finds nothing to do. ``--full-scan``, ``--target``, ``-o``, ``-v`` and other
formats always take the normal run.

This module is imported by the entry point before anything else, so at module level it
imports only the standard library and three small modules of ours that do too (config
discovery, the state database's choice, the errors); ``fact`` and ``update``, which the
normal run calls, import SQLAlchemy themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.config.discovery import discover_config_path
from reconciler.errors import ConfigError
from reconciler.state.location import STATE_VARIABLE, chosen_state_url, plain_sqlite_file
from reconciler.state.names import LOCK_TABLE, MEMO_TABLE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from reconciler.engine.kind import Kind, Observation
    from reconciler.engine.planner import Planned
    from reconciler.state.store import StateStore

PLUGINS_VARIABLE = "RECONCILER_PLUGINS"  # more resource kinds (registry.py): a memo is of the same kinds
TABLE, LOCK_TABLE = MEMO_TABLE, LOCK_TABLE

# The command lines a replay understands: per command, its flags and its options with the
# values they may take (None: any). Global options come before the command. Anything else
# on the command line (-v, --full-scan, --target, -o, another format...) means the normal run.
Grammar = tuple[set[str], dict[str, set[str] | None]]
GLOBAL: Grammar = (set(), {"--config": None, "--state": None})
COMMANDS: dict[str, Grammar] = {
    "plan": ({"--detailed-exitcode"}, {"--format": {"text"}}),
    "reconcile": ({"--allow-destroy"}, {"--lock-timeout": None}),
}


@dataclass
class Memo:
    """What one kind's "nothing to do" rests on (see the module docstring).

    ``directories``: (absolute path, mtime in ns) of directories whose contents the kind
    would not read again while their mtimes are as recorded. ``writable``: (path, st_dev,
    st_ino) of directories that must still exist, be writable, and be the same directory
    (a replica's root: an unmounted disk is another directory). ``programs``: (name,
    path) that ``shutil.which`` must still give. ``facts``: (SQL, parameters, digest of
    its rows) read back from the state database (``fact`` makes them). ``valid_until``:
    seconds since the epoch at which something falls due regardless (a full scan, a
    verification), None for never.
    """

    directories: list[tuple[str, int]] = field(default_factory=list)
    writable: list[tuple[str, int, int]] = field(default_factory=list)
    programs: list[tuple[str, str]] = field(default_factory=list)
    facts: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    valid_until: float | None = None


def rows_digest(rows: list[tuple[Any, ...]]) -> str:
    """A digest of query rows as the SQLite driver returns them (ints, floats, text, bytes, None)."""
    return hashlib.sha256(repr([tuple(row) for row in rows]).encode("utf-8", "surrogatepass")).hexdigest()


def fact(connection: Connection, sql: str, **parameters: Any
         ) -> tuple[tuple[str, dict[str, Any], str], list[tuple[Any, ...]]]:
    """A fact for a ``Memo`` and the rows it stands for: ``sql`` (one SELECT with ``:name``
    parameters and an ORDER BY of its own, if it reads several rows) and the digest of the
    rows it reads now. Decide on the rows returned, not on another read of the same table:
    reads on SQLite are not one snapshot, and another run may write in between."""
    from sqlalchemy import text

    rows = [tuple(row) for row in connection.execute(text(sql), parameters)]
    return (sql, parameters, rows_digest(rows)), rows


def wanted(state: StateStore, targets: tuple[str, ...]) -> bool:
    """Whether a kind should make a memo at all: only for a SQLite state (which a replay reads
    with the standard library) and a run of the whole config."""
    return state.database_path is not None and not targets


# --- writing (the normal run) -------------------------------------------------------------


def combined(kinds: list[Kind], observations: dict[str, Observation]) -> Memo | None:
    """Every kind's memo as one, or None when any kind offered none."""
    total = Memo()
    deadlines = []
    for kind in kinds:
        memo = observations[kind.name].memo
        if memo is None:
            return None
        total.directories.extend(memo.directories)
        total.writable.extend(memo.writable)
        total.programs.extend(memo.programs)
        total.facts.extend(memo.facts)
        if memo.valid_until is not None:
            deadlines.append(memo.valid_until)
    total.valid_until = min(deadlines) if deadlines else None
    return total


def update(state: StateStore, config_path: Path, config_sha256: str, kinds: list[Kind],
           planned: Planned, render_text: Callable[[], str], allowed: bool = True) -> bool:
    """After a run of the whole config has planned: keep a memo of it when it found nothing to
    do and every kind offered one, else drop the config's memo (so a memo only ever stands for
    the last run). ``allowed`` False drops it in any case (a run with [monitoring] must run in
    full: a replay writes no metrics and sends no ping). Returns whether a memo was kept. Only
    for a SQLite state."""
    from sqlalchemy import delete, insert

    from reconciler import __version__
    from reconciler.state.tables import MemoRecord

    if state.database_path is None:
        return False
    plan = planned.plan
    memo = None
    if allowed and not (plan.actions or plan.notes or plan.errors or plan.warnings or plan.targets):
        memo = combined(kinds, planned.observations)
    table = MemoRecord.__table__  # type: ignore[attr-defined]
    with state.engine.begin() as connection:
        connection.execute(delete(table).where(table.c.config_path == str(config_path)))
        if memo is not None:
            connection.execute(insert(table).values(
                config_path=str(config_path), config_sha256=config_sha256, tool_version=__version__,
                database=state.database_path, plugins=os.environ.get(PLUGINS_VARIABLE, ""), made_at=time.time(),
                valid_until=memo.valid_until, checks=json.dumps(asdict(memo), ensure_ascii=True),
                output=render_text()))
    return memo is not None


# --- replaying (before anything heavy is loaded) ------------------------------------------


@dataclass
class Invocation:
    """A command line a replay understands."""

    command: str
    config: str | None
    state: str | None


def parse(argv: list[str]) -> Invocation | None:
    """The command line as an ``Invocation``, or None when it holds anything a replay does not know."""
    flags, options = GLOBAL
    values: dict[str, str] = {}
    command = None
    words = iter(argv)
    for word in words:
        name, equals, value = word.partition("=")
        if command is None and word in COMMANDS:
            command = word
            flags, options = COMMANDS[word]
        elif word in flags:
            continue
        elif name in options:
            if not equals:
                value = next(words, None)  # type: ignore[assignment]
                if value is None:
                    return None
            accepted = options[name]
            if accepted is not None and value not in accepted:
                return None
            values[name] = value
        else:
            return None
    if command is None:
        return None
    return Invocation(command, values.get("--config"), values.get("--state"))


def state_database(option: str | None, environ: dict[str, str], config_dir: Path,
                   section: dict[str, Any]) -> Path | None:
    """The SQLite file of the state database, as the normal run would choose it, or None when
    the state is anything else (or cannot be chosen): then there is no replay."""
    url, url_env = section.get("url"), section.get("url_env")
    if not isinstance(url, (str, type(None))) or not isinstance(url_env, (str, type(None))):
        return None
    try:
        chosen = chosen_state_url(option or environ.get(STATE_VARIABLE), url, url_env, environ)
    except ConfigError:
        return None
    return plain_sqlite_file(chosen, config_dir)


def _holds(checks: dict[str, Any], connection: sqlite3.Connection) -> bool:
    """Whether everything a memo rests on still holds."""
    import shutil
    from stat import S_ISDIR

    for path, mtime_ns in checks["directories"]:
        status = os.stat(path, follow_symlinks=False)
        if status.st_mtime_ns != mtime_ns or not S_ISDIR(status.st_mode):
            return False
    for path, device, inode in checks["writable"]:
        status = os.stat(path)
        if (status.st_dev, status.st_ino) != (device, inode) or not S_ISDIR(status.st_mode):
            return False
        if not os.access(path, os.W_OK | os.X_OK):
            return False
    for name, found in checks["programs"]:
        if shutil.which(name) != found:
            return False
    for sql, parameters, digest in checks["facts"]:
        if rows_digest(connection.execute(sql, parameters).fetchall()) != digest:
            return False
    return True


@dataclass
class Replay:
    """A replayed run: for ``plan``, ``output`` (the plan's text) on stdout; for ``reconcile``,
    a log line naming when the memo was made and how many directories were checked."""

    command: str
    output: str
    made_at: float
    directories: int


def check(argv: list[str], environ: dict[str, str], version: str) -> Replay | None:
    """The replay of this command line, or None when the normal run must go ahead.

    Never raises: a memo that cannot be read or checked is simply not used.
    """
    invocation = parse(argv)
    if invocation is None:
        return None
    try:
        return _check(invocation, environ, version)
    except Exception:  # an unreadable config, state or memo: the full run reads and reports it
        return None


def _check(invocation: Invocation, environ: dict[str, str], version: str) -> Replay | None:
    import tomllib

    path = discover_config_path(invocation.config, environ)
    text = path.read_text(encoding="utf-8")  # as the loader reads it (newlines translated)
    section = tomllib.loads(text).get("state", {})
    if not isinstance(section, dict):
        return None
    database = state_database(invocation.state, environ, path.parent, section)
    if database is None or not database.is_file():
        return None
    # mode=rw: never create a database; as_uri() escapes what a URI would misread (?, #, %).
    connection = sqlite3.connect(f"{database.as_uri()}?mode=rw", uri=True, timeout=5, isolation_level=None)
    try:
        connection.execute("BEGIN")  # one snapshot for the memo and every fact
        row = connection.execute(
            f"SELECT config_sha256, tool_version, database, plugins, made_at, valid_until, checks, output "
            f"FROM {TABLE} WHERE config_path = ?", (str(path),)).fetchone()
        if row is None:
            return None
        sha256, tool_version, written_to, plugins, made_at, valid_until, checks, output = row
        if (sha256 != hashlib.sha256(text.encode("utf-8")).hexdigest() or tool_version != version
                or written_to != str(database) or plugins != environ.get(PLUGINS_VARIABLE, "")
                or (valid_until is not None and time.time() >= valid_until)):
            return None
        locked = connection.execute(f"SELECT count(*) FROM {LOCK_TABLE}").fetchone()[0]
        if invocation.command == "reconcile" and locked:
            return None  # another run holds the lock (or left it): the normal run says so
        memo = json.loads(checks)
        if not _holds(memo, connection):
            return None
        return Replay(invocation.command, output, made_at, len(memo["directories"]))
    finally:
        connection.close()


def emit(replay: Replay, log_line: Callable[[str, str], str]) -> int:
    """Print a replay as the normal run would have, and return the exit code (0: nothing to do)."""
    if replay.command == "plan":
        sys.stdout.write(replay.output)
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(replay.made_at))
        sys.stderr.write(log_line("INFO", f"converged: nothing to do (nothing it rests on changed since the run "
                                          f"of {since}; {replay.directories:,} directories checked)") + "\n")
    sys.stdout.flush()
    return 0

"""Tables the engine owns. Resource kinds declare their own in their modules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Index, text
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from reconciler.state.names import LOCK_TABLE, MEMO_TABLE

# 2: runs.lock_id; 3: locks.lock_id not unique (one run, many rows). A new table needs no new
# version: the store creates missing tables on every open (store.py); versions and migrations are
# for changes to tables that exist.
ENGINE_SCHEMA_VERSION = 3


class SchemaVersion(SQLModel, table=True):
    """One row per component (``engine`` and each resource kind): the version of its tables."""

    __tablename__ = "schema_version"

    component: str = Field(primary_key=True)
    version: int


class RunRecord(SQLModel, table=True):
    """One apply or reconcile run."""

    __tablename__ = "runs"

    run_id: str = Field(primary_key=True)
    plan_id: str = Field(index=True)
    operation: str
    who: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"  # running | succeeded | failed | interrupted
    # The lock the run held: a run still "running" whose lock row is gone died with its
    # holder, and the next run to take the lock closes it as interrupted (lock.py).
    lock_id: str | None = None


class JournalEntry(SQLModel, table=True):
    """One action of one run: written before the action starts and after it ends."""

    __tablename__ = "journal"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    action_id: str = Field(index=True)
    address: str = Field(index=True)
    kind: str
    status: str  # started | succeeded | failed | skipped | pending | interrupted (its run died meanwhile)
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    result: str | None = None


class LockRecord(SQLModel, table=True):
    """Who holds a lock of the state database (primary key ``name``: "apply" for a run that
    holds the whole state; on PostgreSQL also an address, e.g. "replica:/mnt/backup", or
    ``<name>#shared#<lock id>`` for each holder of a shared lock).

    The row only names the holder; the lock itself is an OS file lock (SQLite) or an
    advisory lock (PostgreSQL) that dies with the holder's process (lock.py). All the rows
    of one run's locks share its ``lock_id``."""

    __tablename__ = LOCK_TABLE

    name: str = Field(primary_key=True)
    lock_id: str = Field(index=True)
    who: str
    host: str
    pid: int
    operation: str
    created_at: datetime


class MemoRecord(SQLModel, table=True):
    """The no-change memo of one config (engine/memo.py): what the last run, which found
    nothing to do, rested on, and the plan it printed. Read without SQLAlchemy by the
    replay, so its columns hold plain values (times as seconds since the epoch)."""

    __tablename__ = MEMO_TABLE

    config_path: str = Field(primary_key=True)
    config_sha256: str
    tool_version: str
    database: str  # the SQLite file the run wrote this memo to (as it resolved the state)
    plugins: str  # $RECONCILER_PLUGINS of the run
    made_at: float
    valid_until: float | None = None
    checks: str  # JSON of the Memo
    output: str  # the plan as text


class MeasurementRecord(SQLModel, table=True):
    """One figure a run recorded for the report's history (engine/history.py): ``metric``
    (``bytes``, ``files``, ``free_bytes``...) of ``address``, as measured at ``measured_at``
    (UTC), recorded by the run started at ``recorded_at``. ``day`` (``YYYY-MM-DD`` of
    ``measured_at``) lets the thinning keep one figure per day once they are old."""

    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_address_metric", "address", "metric", "measured_at"),)

    id: int | None = Field(default=None, primary_key=True)
    address: str
    metric: str
    value: float
    measured_at: datetime
    recorded_at: datetime = Field(index=True)
    command: str
    day: str


def _add_runs_lock_id(connection: Connection) -> None:
    connection.execute(text("ALTER TABLE runs ADD COLUMN lock_id VARCHAR"))


def _lock_ids_not_unique(connection: Connection) -> None:
    connection.execute(text("DROP INDEX IF EXISTS ix_locks_lock_id"))
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_locks_lock_id ON locks (lock_id)"))


# Engine migrations: from schema version N to N + 1 (store.py runs them in order).
ENGINE_MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_runs_lock_id, 2: _lock_ids_not_unique}

ENGINE_TABLES: list[type[SQLModel]] = [SchemaVersion, RunRecord, JournalEntry, LockRecord, MemoRecord,
                                       MeasurementRecord]

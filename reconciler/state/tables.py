"""Tables the engine owns. Resource kinds declare their own in their modules."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from reconciler.engine.memo import TABLE

ENGINE_SCHEMA_VERSION = 1


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


class JournalEntry(SQLModel, table=True):
    """One action of one run: written before the action starts and after it ends."""

    __tablename__ = "journal"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    action_id: str = Field(index=True)
    address: str = Field(index=True)
    kind: str
    status: str  # started | succeeded | failed | skipped | pending
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    result: str | None = None


class LockRecord(SQLModel, table=True):
    """The single apply lock of a state database (primary key ``name`` = "apply")."""

    __tablename__ = "locks"

    name: str = Field(primary_key=True)
    lock_id: str = Field(index=True, unique=True)
    who: str
    host: str
    pid: int
    operation: str
    created_at: datetime


class MemoRecord(SQLModel, table=True):
    """The no-change memo of one config (engine/memo.py): what the last run, which found
    nothing to do, rested on, and the plan it printed. Read without SQLAlchemy by the
    replay, so its columns hold plain values (times as seconds since the epoch)."""

    __tablename__ = TABLE

    config_path: str = Field(primary_key=True)
    config_sha256: str
    tool_version: str
    database: str  # the SQLite file the run wrote this memo to (as it resolved the state)
    plugins: str  # $RECONCILER_PLUGINS of the run
    made_at: float
    valid_until: float | None = None
    checks: str  # JSON of the Memo
    output: str  # the plan as text


ENGINE_TABLES: list[type[SQLModel]] = [SchemaVersion, RunRecord, JournalEntry, LockRecord, MemoRecord]

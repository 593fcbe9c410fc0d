"""The backup catalog cache. The truth is the destination directory: this table is
rebuilt from the manifests on every observation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class BackupRecord(SQLModel, table=True):
    __tablename__ = "backup_catalog"

    database_key: str = Field(primary_key=True)
    backup_id: str = Field(primary_key=True)
    time: datetime
    path: str
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    documents: int = Field(sa_column=Column(BigInteger, nullable=False))


class RestoreCheckpoint(SQLModel, table=True):
    """A restore in progress: the namespaces it created on a server (written before each is
    created, removed when the restore ends or rolls back). Rows left behind name what a killed
    restore half-wrote; the next restore to that server offers to drop exactly those."""

    __tablename__ = "backup_restore_checkpoint"

    server: str = Field(primary_key=True)  # the target URI, redacted
    namespace: str = Field(primary_key=True)
    backup: str
    started_at: datetime
    created: bool = True  # False: it existed empty before the restore (emptied again, never dropped)

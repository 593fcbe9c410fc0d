"""Checkpoints of whole-instance migrations: one row per project, a timestamp per finished step,
so that a killed migration resumes where it stopped and ``instances migration`` reports what moved."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class MigratedProject(SQLModel, table=True):
    __tablename__ = "instance_migrations"

    target: str = Field(primary_key=True)  # the [instances.*] entry migrated to
    source: str = Field(primary_key=True)  # the entry migrated from
    source_uid: str = Field(primary_key=True)
    new_uid: str | None = None
    source_path: str
    path: str
    files: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    started_at: datetime
    detached_at: datetime | None = None
    copied_at: datetime | None = None  # copy verified (or none needed)
    attached_at: datetime | None = None
    archived_at: datetime | None = None  # a database migration archived it (and unarchives it at the target)


class CopiedDatabase(SQLModel, table=True):
    """A database migration's copy of the source database into the target's (alternative A)."""

    __tablename__ = "instance_database_copies"

    target: str = Field(primary_key=True)
    source: str = Field(primary_key=True)
    started_at: datetime  # the snapshot's time: project records changed after it refuse the migration
    copied_at: datetime | None = None
    documents: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))

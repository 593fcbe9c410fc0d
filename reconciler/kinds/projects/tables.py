"""What the state store keeps for projects: copies made for moves, and whether they were verified.

A move's old directory is removed only when a row here says its copy was verified
(in this run or an earlier one); the world (documents, directories, cs.lock) is
the truth for everything else.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class ProjectCopy(SQLModel, table=True):
    __tablename__ = "project_copies"

    source: str = Field(primary_key=True)
    destination: str = Field(primary_key=True)
    project: str  # the [projects.*] name
    started_at: datetime
    verified_at: datetime | None = None
    files: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    records_sha256: str | None = None
    removed_at: datetime | None = None  # the source directory was removed after the move


class BundleImport(SQLModel, table=True):
    """Checkpoints of a bundle import: a run killed half-way is rolled back by the next one."""

    __tablename__ = "bundle_imports"

    id: int | None = Field(default=None, primary_key=True)
    bundle: str
    instance: str
    uid: str
    destination: str
    staging: str
    stage: str  # extracting | inserting | done | rolled_back
    started_at: datetime
    finished_at: datetime | None = None

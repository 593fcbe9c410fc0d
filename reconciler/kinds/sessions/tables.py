"""What the state store keeps for sessions: measured datatype sizes (for `sessions stats`
and the report) and hooks that failed after a deletion and must run again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class SessionDatatype(SQLModel, table=True):
    __tablename__ = "session_datatypes"

    instance: str = Field(primary_key=True)
    project_uid: str = Field(primary_key=True)
    session_uid: str = Field(primary_key=True)
    datatype: str = Field(primary_key=True)
    status: str
    files: int = Field(sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    measured_at: datetime


class PendingHook(SQLModel, table=True):
    __tablename__ = "pending_hooks"

    address: str = Field(primary_key=True)  # session:P12/S1/micrographs
    status: str
    failed_at: datetime
    error: str

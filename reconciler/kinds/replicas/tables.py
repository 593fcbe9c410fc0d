"""The inventory: origin files, replica copies, and the bookkeeping of scans."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


class OriginFile(SQLModel, table=True):
    """One file of one origin, as last observed."""

    __tablename__ = "origin_files"
    __table_args__ = (
        UniqueConstraint("origin", "path", name="uq_origin_files_origin_path"),
        Index("ix_origin_files_origin_dir", "origin", "dir"),
    )

    id: int | None = Field(default=None, primary_key=True)
    origin: str
    path: str  # relative to the origin root (see paths.py for the encoding)
    dir: str  # the path's directory, for scoped "gone" marking
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_seen: datetime
    last_seen: datetime
    gone_since: datetime | None = None
    from_replica: bool = False  # known only from a replica (enrolled), not yet seen on the origin
    sha256: str | None = None  # of the content at this size and mtime (checksum = "sha256"); reset when they change
    trimmed_at: datetime | None = None  # removed from the origin by a trim, its copies proven: not "gone"


class ReplicaCopy(SQLModel, table=True):
    """A copy of an origin file on a replica: what was copied (or enrolled) and when.

    Its content (checksum = "sha256"): *verified* when ``checked_at`` is set (the copy was
    read where it lies and its sha256 matched the origin's then), *corrupt* when
    ``corrupt_since`` is set (a read found it missing or different; ``checked_at`` is then
    NULL, so every copy to read is found through the (replica, checked_at) index), else
    *unverified*."""

    __tablename__ = "replica_copies"
    __table_args__ = (Index("ix_replica_copies_replica_checked", "replica", "checked_at"),)

    replica: str = Field(primary_key=True)
    file_id: int = Field(primary_key=True, foreign_key="origin_files.id")
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    copied_at: datetime | None = None
    verified_at: datetime | None = None  # listed with the recorded size and mtime (verify_every)
    sha256: str | None = None  # of the copy as last read where it lies
    checked_at: datetime | None = None  # when it was last read and matched (verified)
    corrupt_since: datetime | None = None  # when a read first found it missing or different


class ScannedDir(SQLModel, table=True):
    """A directory of an origin at its last listing: what lets unchanged directories be skipped."""

    __tablename__ = "scanned_dirs"

    origin: str = Field(primary_key=True)
    path: str = Field(primary_key=True)
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    settled: bool  # every file in it was settled when it was listed
    digest: str | None = None  # of its files as folded into the inventory (listing.files_digest)


class OriginStatus(SQLModel, table=True):
    __tablename__ = "origin_status"

    origin: str = Field(primary_key=True)
    last_scan: datetime | None = None
    last_full_scan: datetime | None = None
    generation: int = 0  # bumped whenever the origin's inventory changes (a scan that changed it, a trim)
    # The origin's live files and bytes as counted at ``counted_generation`` (report.measure);
    # current only while that equals ``generation``.
    live_files: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    live_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    counted_generation: int | None = None


class ReplicaStatus(SQLModel, table=True):
    __tablename__ = "replica_status"

    replica: str = Field(primary_key=True)
    last_sync: datetime | None = None
    last_verify: datetime | None = None
    marker_id: str | None = None  # the id in <root>/.reconciler-replica, written by the first copy
    device: str | None = None  # the root's file system identity (marker.local_device) when the marker was seen
    offline_since: datetime | None = None  # a removable replica's root was first found absent then
    # Bumped by every write that adds, drops or resizes a copy record of the replica (bump_copies);
    # the files and bytes it holds as counted at ``held_generation`` are current only while equal.
    copies_generation: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0,
                                                               server_default="0"))
    held_files: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    held_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    held_generation: int | None = None


class PairStatus(SQLModel, table=True):
    """A replica was complete for an origin at this inventory generation."""

    __tablename__ = "replica_pair_status"

    replica: str = Field(primary_key=True)
    origin: str = Field(primary_key=True)
    complete_generation: int = -1


class ScanEntry(SQLModel, table=True):
    """Scratch rows of one listing (files 'f'; directories 'd', 'u', 's' as in listing.Entry), removed after use."""

    __tablename__ = "scan_entries"
    __table_args__ = (Index("ix_scan_entries_scan_path", "scan_id", "path"),)

    id: int | None = Field(default=None, primary_key=True)
    scan_id: str  # starts with the UTC time, so leftovers of killed runs can be swept
    entry_type: str
    path: str
    dir: str = ""
    size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    mtime_ns: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))

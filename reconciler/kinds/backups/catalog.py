"""Backups on disk: manifests, the catalog read from a destination, leftovers.

The manifest is plain dataclasses, so that a dump (which only writes one) never imports pydantic:
that import was most of the dump path's start-up. Reading one validates it with pydantic, which
validates standard dataclasses as it does its own models (loaded then, where it is used).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True, kw_only=True)
class ManifestFile:
    path: str  # relative to the destination directory
    bytes: int
    sha256: str


@dataclass(kw_only=True)
class CollectionStats:  # filled in as the dump goes
    documents: int  # documents stored (for a time-series collection: its buckets)
    bytes: int  # uncompressed BSON bytes
    type: str = "collection"  # collection | timeseries | view
    measurements: int | None = None  # a time-series collection's measurements when it was dumped


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """``<backup>.manifest.json``: a backup without a complete manifest is not a backup."""

    backup_id: str
    database_key: str  # the [databases.<key>] entry
    database: str  # the MongoDB database name
    format: str
    compressed: bool
    method: str
    server_version: str
    tool_version: str
    started_at: datetime
    finished_at: datetime
    collections: dict[str, CollectionStats] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # namespace -> why it is not in the backup
    consistent: str | None = None  # "oplog": the backup holds the oplog of its dump window
    oplog_entries: int | None = None
    files: list[ManifestFile] = field(default_factory=list)
    manifest_version: int = 1

    def to_json(self) -> str:
        """The manifest file's text: the keys in the order older versions wrote them."""
        data = dataclasses.asdict(self)
        ordered = {key: data[key] for key in _KEY_ORDER}
        return json.dumps(ordered, indent=2, ensure_ascii=False, default=_json_time) + "\n"

    @property
    def documents(self) -> int:
        return sum(stats.documents for stats in self.collections.values())

    def summary(self) -> str:
        """``2,505 documents in 2 collections, 1 time-series collection (3 buckets), 1 view``."""
        kinds: dict[str, list[CollectionStats]] = {}
        for stats in self.collections.values():
            kinds.setdefault(stats.type, []).append(stats)
        plain = kinds.pop("collection", [])
        parts = [f"{sum(s.documents for s in plain):,} documents in {len(plain)} collection"
                 + ("" if len(plain) == 1 else "s")]
        series = kinds.pop("timeseries", [])
        if series:
            parts.append(f"{len(series)} time-series collection{'' if len(series) == 1 else 's'} "
                         f"({sum(s.documents for s in series):,} buckets)")
        views = kinds.pop("view", [])
        if views:
            parts.append(f"{len(views)} view{'' if len(views) == 1 else 's'}")
        for kind, items in sorted(kinds.items()):
            parts.append(f"{len(items)} {kind}")
        if self.oplog_entries is not None:
            parts.append(f"{self.oplog_entries:,} oplog entries")
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{name} ({why})" for name, why in sorted(self.skipped.items())))
        return ", ".join(parts)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.files)


_KEY_ORDER = ("manifest_version", "backup_id", "database_key", "database", "format", "compressed", "method",
              "collections", "skipped", "consistent", "oplog_entries", "files", "server_version", "tool_version",
              "started_at", "finished_at")


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class Backup:
    manifest: Manifest
    manifest_path: Path

    @property
    def backup_id(self) -> str:
        return self.manifest.backup_id

    @property
    def time(self) -> datetime:
        return self.manifest.started_at

    @property
    def data_path(self) -> Path:
        """The archive file or the dump directory."""
        return self.manifest_path.parent / self.manifest_path.name[: -len(MANIFEST_SUFFIX)]


@dataclass
class Catalog:
    backups: list[Backup]  # oldest first
    leftovers: list[Path]  # temporary or manifest-less data: not backups
    unreadable: list[str]  # manifests that could not be read (never deleted by the tool)


def backup_id_for(database_key: str, started: datetime) -> str:
    return f"{database_key}-{started.astimezone(UTC):%Y%m%dT%H%M%SZ}"


@functools.cache
def _validator() -> Any:
    from pydantic import TypeAdapter  # reading validates; writing a dump does not need pydantic

    return TypeAdapter(Manifest)


def read_manifest(path: Path) -> Manifest:
    """Raises ValueError with the reason when the manifest is not readable."""
    try:
        return _validator().validate_python(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable manifest ({str(error).splitlines()[0]})") from None


def read_catalog(destination: Path, database_key: str) -> Catalog:
    """The backups of ``database_key`` in ``destination`` (truth is the directory, not the state).

    Raises FileNotFoundError when the destination does not exist.
    """
    backups: list[Backup] = []
    unreadable: list[str] = []
    names = sorted(os.listdir(destination))
    data_names: set[str] = set()
    prefix = f"{database_key}-"
    for name in names:
        if not name.startswith(prefix) and not name.startswith(TEMP_PREFIX + prefix):
            continue
        if name.endswith(MANIFEST_SUFFIX):
            try:
                manifest = read_manifest(destination / name)
            except ValueError as error:
                unreadable.append(str(error))
                continue
            if manifest.database_key == database_key:
                backups.append(Backup(manifest, destination / name))
        else:
            data_names.add(name)
    complete = {backup.data_path.name for backup in backups}
    leftovers = [destination / name for name in sorted(data_names - complete)]
    backups.sort(key=lambda backup: backup.time)
    return Catalog(backups, leftovers, unreadable)

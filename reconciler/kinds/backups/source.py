"""Reading any backup: a reconciler backup (archive or directory, with its manifest),
a mongodump archive or output folder, or a jobflow-remote python dump."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.fsutil import sha256_file
from reconciler.kinds.backups.archive import ArchiveReader, open_maybe_gzip
from reconciler.kinds.backups.bsonio import BsonFormatError, check_document, iter_documents
from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, Manifest, read_manifest
from reconciler.kinds.backups.dumpdir import find_collections
from reconciler.kinds.backups.names import BUCKETS_PREFIX

# What reading a damaged file can raise besides BsonFormatError: zlib.error (corrupt gzip data),
# EOFError (a truncated gzip stream), OSError (gzip.BadGzipFile, I/O), UnicodeDecodeError.
READ_ERRORS = (BsonFormatError, OSError, EOFError, zlib.error, ValueError)


def describe(error: BaseException) -> str:
    """A read error as one line (gzip and zlib errors named as such)."""
    if isinstance(error, BsonFormatError):
        return str(error)
    if isinstance(error, zlib.error):
        return f"corrupt gzip data ({error})"
    if isinstance(error, EOFError):
        return "truncated: the compressed stream ends early"
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.strerror is None:
        return f"not readable ({error})"
    return str(error.strerror if isinstance(error, OSError) and error.strerror else error)


@dataclass
class SourceCollection:
    """One namespace of a backup: a collection, a time-series collection (its documents are
    the buckets in ``system.buckets.<name>``), a view (no documents), or the oplog (db "")."""

    db: str
    collection: str
    metadata: dict[str, Any]
    has_data: bool = True

    @property
    def type(self) -> str:
        if not self.db and self.collection == "oplog":
            return "oplog"
        return str(self.metadata.get("type") or "collection")

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def data_collection(self) -> str | None:
        """The collection name the documents are stored under in the backup."""
        if self.type == "view":
            return None
        return f"{BUCKETS_PREFIX}{self.collection}" if self.type == "timeseries" else self.collection


def _merge_buckets(collections: list[SourceCollection]) -> list[SourceCollection]:
    """A time-series collection's buckets belong to it: no entry of their own."""
    owned = {(item.db, f"{BUCKETS_PREFIX}{item.collection}") for item in collections if item.type == "timeseries"}
    return [item for item in collections if (item.db, item.collection) not in owned]


@dataclass
class BackupSource:
    """A backup to read. ``collections`` is known up front; ``documents()`` streams
    ``(db, collection, raw bytes)`` and raises BsonFormatError on any damage."""

    path: Path
    kind: str  # archive | directory
    collections: list[SourceCollection] = field(default_factory=list)
    manifest: Manifest | None = None
    database: str | None = None

    def documents(self, validate: bool = True) -> Iterator[tuple[str, str, bytes]]:
        if self.kind == "archive":
            with open(self.path, "rb") as raw:
                reader = ArchiveReader(open_maybe_gzip(raw), self.path.name)
                offset = 0
                for namespace, document in reader.documents():
                    if validate:
                        check_document(document, f"{self.path.name} ({namespace})", offset)
                    offset += len(document)
                    db, _, collection = namespace.partition(".")
                    yield db, collection, document
            return
        for found in find_collections(self.path, self.database):
            if found.data is None:
                continue
            with found.open_data() as stream:
                for document in iter_documents(stream, str(found.data), validate=validate):
                    yield found.db, found.collection, document


def manifest_beside(path: Path) -> Manifest | None:
    candidate = path.parent / (path.name + MANIFEST_SUFFIX)
    return read_manifest(candidate) if candidate.exists() else None


def open_source(path: Path, database: str | None = None) -> BackupSource:
    """Open a backup for reading (its collections and metadata are read now, documents later).

    Raises BsonFormatError when it is not a backup or is damaged at the start.
    """
    path = Path(path)
    if not path.exists():
        raise BsonFormatError(f"{path}: no such backup file or directory")
    try:
        manifest = manifest_beside(path)
    except ValueError as error:
        raise BsonFormatError(str(error)) from None
    if path.is_file():
        with open(path, "rb") as raw:
            reader = ArchiveReader(open_maybe_gzip(raw), path.name)
            collections = []
            for meta in reader.contents.collections:
                metadata = meta.parsed()
                if meta.type and "type" not in metadata and meta.db:
                    metadata["type"] = meta.type
                collections.append(SourceCollection(meta.db, meta.collection, metadata, meta.has_data))
        return BackupSource(path, "archive", _merge_buckets(collections), manifest)
    found = find_collections(path, database)
    collections = [SourceCollection(item.db, item.collection, item.read_metadata(), item.data is not None)
                   for item in found]
    return BackupSource(path, "directory", _merge_buckets(collections), manifest, database)


def verify(source: BackupSource) -> list[str]:
    """Every problem found re-reading a backup: manifest checksums and sizes, files the manifest
    does not list, BSON framing and content (dates are not decoded into Python objects: a date
    beyond year 9999 is valid BSON), archive CRCs, document counts. Empty when it is intact.
    Never raises for a damaged file: every read error is a problem in the list."""
    problems: list[str] = []
    manifest = source.manifest
    if manifest is not None:
        base = source.path.parent
        listed = set()
        for item in manifest.files:
            file = base / item.path
            listed.add(os.path.normpath(file))
            if not file.exists():
                problems.append(f"{item.path}: missing")
                continue
            if file.stat().st_size != item.bytes:
                problems.append(f"{item.path}: {file.stat().st_size} bytes, the manifest says {item.bytes}")
            elif sha256_file(file) != item.sha256:
                problems.append(f"{item.path}: sha256 differs from the manifest")
        if source.path.is_dir():
            for directory, _, names in os.walk(source.path):
                for name in sorted(names):
                    found = os.path.normpath(os.path.join(directory, name))
                    if found not in listed:
                        problems.append(f"{os.path.relpath(found, base)}: not listed in the manifest "
                                        "(an extra file is never restored)")
    counts: dict[str, int] = {}
    try:
        for db, collection, _document in source.documents(validate=True):
            key = collection if db else "oplog"
            counts[key] = counts.get(key, 0) + 1
    except READ_ERRORS as error:
        problems.append(describe(error))
        return problems
    if manifest is not None:
        owners = {item.data_collection: item.collection for item in source.collections
                  if item.data_collection and item.db}
        by_owner: dict[str, int] = {}
        for name, count in counts.items():
            by_owner[owners.get(name, name)] = by_owner.get(owners.get(name, name), 0) + count
        for name, stats in manifest.collections.items():
            if by_owner.get(name, 0) != stats.documents:
                problems.append(f"{name}: {by_owner.get(name, 0)} documents, the manifest says {stats.documents}")
        if manifest.oplog_entries is not None and counts.get("oplog", 0) != manifest.oplog_entries:
            problems.append(f"oplog: {counts.get('oplog', 0)} entries, the manifest says {manifest.oplog_entries}")
    return problems

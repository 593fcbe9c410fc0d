"""Reading any backup: a reconciler backup (archive or directory, with its manifest),
a mongodump archive or output folder, or a jobflow-remote python dump."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.fsutil import sha256_file
from reconciler.kinds.backups.archive import ArchiveReader, open_maybe_gzip
from reconciler.kinds.backups.bsonio import BsonFormatError, check_document, iter_documents
from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, Manifest, read_manifest
from reconciler.kinds.backups.dumpdir import find_collections


@dataclass
class SourceCollection:
    db: str
    collection: str
    metadata: dict[str, Any]
    has_data: bool = True


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
            collections = [SourceCollection(meta.db, meta.collection, meta.parsed(), meta.has_data)
                           for meta in reader.contents.collections]
        return BackupSource(path, "archive", collections, manifest)
    found = find_collections(path, database)
    collections = [SourceCollection(item.db, item.collection, item.read_metadata(), item.data is not None)
                   for item in found]
    return BackupSource(path, "directory", collections, manifest, database)


def verify(source: BackupSource) -> list[str]:
    """Every problem found re-reading a backup: manifest checksums and sizes, BSON framing
    and content, archive CRCs, document counts. Empty when it is intact."""
    problems: list[str] = []
    manifest = source.manifest
    if manifest is not None:
        base = source.path.parent
        for item in manifest.files:
            file = base / item.path
            if not file.exists():
                problems.append(f"{item.path}: missing")
                continue
            if file.stat().st_size != item.bytes:
                problems.append(f"{item.path}: {file.stat().st_size} bytes, the manifest says {item.bytes}")
            elif sha256_file(file) != item.sha256:
                problems.append(f"{item.path}: sha256 differs from the manifest")
    counts: dict[str, int] = {}
    try:
        for _db, collection, _document in source.documents(validate=True):
            counts[collection] = counts.get(collection, 0) + 1
    except (BsonFormatError, OSError, EOFError) as error:
        problems.append(str(error))
        return problems
    if manifest is not None:
        for name, stats in manifest.collections.items():
            if counts.get(name, 0) != stats.documents:
                problems.append(f"{name}: {counts.get(name, 0)} documents, the manifest says {stats.documents}")
    return problems

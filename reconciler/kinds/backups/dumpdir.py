"""mongodump's directory layout: ``<root>/<db>/<coll>.bson`` plus ``<coll>.metadata.json``
(``.gz`` on both when compressed). Also reads jobflow-remote's python dumps: a folder of
``<coll>.bson.gz`` files without metadata."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bson import json_util

from reconciler.fsutil import HashingWriter
from reconciler.kinds.backups.bsonio import BsonFormatError, count_documents
from reconciler.kinds.backups.names import escape_collection, unescape_collection

CANONICAL = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL)


def metadata_text(metadata: dict[str, object]) -> str:
    """Collection metadata as mongodump writes it: canonical Extended JSON, compact."""
    return json_util.dumps(metadata, json_options=CANONICAL, separators=(",", ":"))


@dataclass(frozen=True)
class DumpedCollection:
    """One collection found in a directory dump."""

    db: str
    collection: str
    data: Path | None  # None for views (metadata only)
    metadata: Path | None  # None for jobflow-remote dumps

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    def open_data(self) -> BinaryIO:
        assert self.data is not None
        return gzip.open(self.data, "rb") if self.data.name.endswith(".gz") else open(self.data, "rb")  # type: ignore[return-value]

    def read_metadata(self) -> dict[str, object]:
        """The collection's metadata; {} when the dump has none. Raises BsonFormatError when unreadable."""
        if self.metadata is None:
            return {}
        try:
            opener = gzip.open if self.metadata.name.endswith(".gz") else open
            with opener(self.metadata, "rt", encoding="utf-8") as stream:  # type: ignore[operator]
                value = json_util.loads(stream.read())
        except (OSError, ValueError, EOFError) as error:
            raise BsonFormatError(f"{self.metadata}: not readable collection metadata ({error})") from None
        if not isinstance(value, dict):
            raise BsonFormatError(f"{self.metadata}: collection metadata is not a JSON object")
        return value


def _strip(name: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _collections_in(folder: Path, db: str) -> list[DumpedCollection]:
    """The collections of one database folder; file names unescaped as mongorestore does."""
    names = sorted(os.listdir(folder))
    found: dict[str, dict[str, Path]] = {}
    for name in names:
        data = _strip(name, (".bson.gz", ".bson"))
        meta = _strip(name, (".metadata.json.gz", ".metadata.json"))
        if data is not None:
            found.setdefault(unescape_collection(data), {})["data"] = folder / name
        elif meta is not None:
            found.setdefault(unescape_collection(meta), {})["metadata"] = folder / name
    return [DumpedCollection(db, collection, paths.get("data"), paths.get("metadata"))
            for collection, paths in sorted(found.items())]


def find_collections(root: Path, database: str | None = None) -> list[DumpedCollection]:
    """Every collection of a directory dump.

    ``root`` may be a mongodump output folder (``<root>/<db>/…``), one database's
    folder, or a jobflow-remote backup folder (``<coll>.bson.gz`` files); for the
    last two the database is ``database`` or the folder's name.

    Raises BsonFormatError when the folder holds no dump.
    """
    root = Path(root)
    if not root.is_dir():
        raise BsonFormatError(f"{root} is not a directory")
    found: list[DumpedCollection] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            found.extend(_collections_in(entry, entry.name))
    direct = _collections_in(root, database or root.name)
    if found:
        # mongodump --oplog writes oplog.bson beside the database folders
        found.extend(DumpedCollection("", "oplog", item.data, None) for item in direct
                     if item.collection == "oplog" and item.data is not None)
        return found
    if direct:
        return direct
    if not found:
        raise BsonFormatError(f"{root}: no .bson or .metadata.json files here or in its database folders; "
                              "is this a dump?")
    return found


class _OutputFile:
    """One dump file: gzip (when compressing) over a hashing writer."""

    def __init__(self, path: Path, compress: bool):
        self.raw = HashingWriter(path)
        self.stream: Any = gzip.GzipFile(fileobj=self.raw, mode="wb", mtime=0) if compress else self.raw

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def close(self) -> tuple[int, str]:
        """Close; return (bytes on disk, sha256 of the bytes on disk)."""
        if self.stream is not self.raw:
            self.stream.close()
        return self.raw.close()


@dataclass
class WrittenFile:
    path: str  # relative to the backup root
    bytes: int
    sha256: str


def write_collection(root: Path, db: str, collection: str, metadata: dict[str, object] | None,
                     documents: Iterable[bytes] | None, compress: bool,
                     chunks: bool = False) -> tuple[int, list[WrittenFile]]:
    """Write one collection as mongodump does (file names escaped as mongodump escapes them);
    ``documents`` None for a view, ``metadata`` None for a time-series collection's buckets.
    Returns the document count and the files written (for the manifest). ``chunks``: each item
    of ``documents`` is a run of whole documents (a server reply batch), not one document."""
    folder = Path(root) / db
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    written: list[WrittenFile] = []
    count = 0
    base = escape_collection(collection)
    if documents is not None:
        data = _OutputFile(folder / f"{base}.bson{suffix}", compress)
        try:
            for raw in documents:
                data.write(raw)
                count += count_documents(raw) if chunks else 1
        finally:
            size, digest = data.close()
        written.append(WrittenFile(f"{db}/{base}.bson{suffix}", size, digest))
    if metadata is None:  # a time-series collection's buckets: the metadata is the collection's own
        return count, written
    meta = _OutputFile(folder / f"{base}.metadata.json{suffix}", compress)
    try:
        meta.write(metadata_text(metadata).encode("utf-8"))
    finally:
        size, digest = meta.close()
    written.append(WrittenFile(f"{db}/{base}.metadata.json{suffix}", size, digest))
    return count, written


def write_oplog(root: Path, entries: Iterable[bytes], compress: bool) -> tuple[int, list[WrittenFile]]:
    """``oplog.bson`` beside the database folders, as mongodump --oplog writes it."""
    suffix = ".gz" if compress else ""
    out = _OutputFile(Path(root) / f"oplog.bson{suffix}", compress)
    count = 0
    try:
        for raw in entries:
            out.write(raw)
            count += 1
    finally:
        size, digest = out.close()
    return count, [WrittenFile(f"oplog.bson{suffix}", size, digest)]

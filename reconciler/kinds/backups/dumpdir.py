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
from reconciler.kinds.backups.bsonio import BsonFormatError

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
    names = sorted(os.listdir(folder))
    found: dict[str, dict[str, Path]] = {}
    for name in names:
        data = _strip(name, (".bson.gz", ".bson"))
        meta = _strip(name, (".metadata.json.gz", ".metadata.json"))
        if data is not None:
            found.setdefault(data, {})["data"] = folder / name
        elif meta is not None:
            found.setdefault(meta, {})["metadata"] = folder / name
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
    direct = _collections_in(root, database or root.name)
    if direct:
        return direct
    found: list[DumpedCollection] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            found.extend(_collections_in(entry, entry.name))
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


def write_collection(root: Path, db: str, collection: str, metadata: dict[str, object],
                     documents: Iterable[bytes] | None, compress: bool) -> tuple[int, list[WrittenFile]]:
    """Write one collection as mongodump does; ``documents`` None for a view. Returns the
    document count and the files written (for the manifest)."""
    folder = Path(root) / db
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    written: list[WrittenFile] = []
    count = 0
    if documents is not None:
        data = _OutputFile(folder / f"{collection}.bson{suffix}", compress)
        try:
            for raw in documents:
                data.write(raw)
                count += 1
        finally:
            size, digest = data.close()
        written.append(WrittenFile(f"{db}/{collection}.bson{suffix}", size, digest))
    meta = _OutputFile(folder / f"{collection}.metadata.json{suffix}", compress)
    try:
        meta.write(metadata_text(metadata).encode("utf-8"))
    finally:
        size, digest = meta.close()
    written.append(WrittenFile(f"{db}/{collection}.metadata.json{suffix}", size, digest))
    return count, written

"""mongodump's ``--archive`` format: read and write.

Layout (mongo-tools, common/archive/spec.md): the magic number 0x8199e26d
(little-endian), a header document {concurrent_collections, version "0.1",
server_version, tool_version}, one metadata document per collection {db,
collection, metadata (canonical Extended JSON text, as in .metadata.json),
size}, the terminator 0xffffffff; then namespace segments (a header {db,
collection, EOF: false, CRC: 0}, documents, terminator) and, once per
namespace, an EOF header {db, collection, EOF: true, CRC} and a terminator.
CRC is CRC-64/XZ (Go's crc64 with the ECMA table) of all the namespace's
document bytes, stored as a signed int64. A gzipped archive is gzip of the
whole stream (mongodump --archive --gzip).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import bson
from bson import json_util
from fastcrc import crc64

from reconciler.kinds.backups.bsonio import BsonFormatError, count_documents, read_document, read_exact

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"
GZIP_MAGIC = b"\x1f\x8b"
FORMAT_VERSION = "0.1"


def crc_update(crc: int, data: bytes) -> int:
    """CRC-64/XZ continued over ``data`` (start with 0)."""
    return crc64.xz(data, initial=crc) if crc else crc64.xz(data)


def to_int64(value: int) -> int:
    return struct.unpack("<q", struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))[0]


@dataclass(frozen=True)
class CollectionMeta:
    db: str
    collection: str
    metadata: str  # canonical Extended JSON text
    size: int = 0
    type: str = ""  # "collection", "view", "timeseries" (mongodump writes it; older archives may not)

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    def parsed(self) -> dict[str, object]:
        """The metadata as a document. Raises BsonFormatError when it is not Extended JSON."""
        if not self.metadata:
            return {}
        try:
            value = json_util.loads(self.metadata)
        except (ValueError, TypeError) as error:
            raise BsonFormatError(f"the metadata of {self.namespace} is not valid Extended JSON ({error})") from None
        if not isinstance(value, dict):
            raise BsonFormatError(f"the metadata of {self.namespace} is not a JSON object")
        return value

    @property
    def kind(self) -> str:
        return self.type or str(self.parsed().get("type") or "collection")

    @property
    def data_namespace(self) -> str | None:
        """Where this collection's documents are in the archive: itself, its ``system.buckets.*``
        namespace for a time-series collection, none for a view."""
        if self.kind == "view":
            return None
        if self.kind == "timeseries":
            return f"{self.db}.system.buckets.{self.collection}"
        return self.namespace

    @property
    def has_data(self) -> bool:
        """Views and time-series collections carry no documents of their own (a time-series
        collection's data is in its system.buckets.* namespace)."""
        return self.kind not in ("view", "timeseries")


@dataclass
class ArchiveContents:
    header: dict[str, object]
    collections: list[CollectionMeta]
    documents: dict[str, int] = field(default_factory=dict)  # namespace -> count (filled while reading)


def open_maybe_gzip(stream: BinaryIO) -> BinaryIO:
    """The stream itself, or a gzip reader over it when it starts with gzip's magic bytes."""
    peek = stream.read(2)
    stream.seek(0)
    return gzip.GzipFile(fileobj=stream, mode="rb") if peek == GZIP_MAGIC else stream  # type: ignore[return-value]


class ArchiveReader:
    """Reads an archive once, front to back, in bounded memory.

    ``contents`` is known after construction; ``documents()`` then yields
    ``(namespace, raw document bytes)`` and checks each namespace's CRC at its
    EOF header. Every problem raises BsonFormatError naming the file, what is
    wrong and where.
    """

    def __init__(self, stream: BinaryIO, name: str):
        self.stream = stream
        self.name = name
        self.offset = 0
        self._pending = b""  # bytes read ahead while looking for a terminator
        magic = read_exact(stream, 4)
        if magic != MAGIC:
            raise BsonFormatError(f"{name}: not a mongodump archive (wrong magic number {magic.hex() or 'none'})")
        self.offset = 4
        header = self._document("the archive header")
        if header is None:
            raise BsonFormatError(f"{name}: truncated after the magic number")
        if str(header.get("version")) != FORMAT_VERSION:
            raise BsonFormatError(f"{name}: archive format version {header.get('version')!r} is not {FORMAT_VERSION}")
        collections = []
        while True:
            if self._at_terminator():
                break
            document = self._document("a collection metadata document")
            if document is None:
                raise BsonFormatError(f"{name}: truncated in the collection metadata")
            try:
                collections.append(CollectionMeta(str(document["db"]), str(document["collection"]),
                                                  str(document.get("metadata", "")),
                                                  int(str(document.get("size", 0))), str(document.get("type", ""))))
            except KeyError as missing:
                raise BsonFormatError(f"{name}: collection metadata at byte {self.offset} lacks {missing}") from None
        for meta in collections:
            try:
                meta.parsed()
            except BsonFormatError as error:
                raise BsonFormatError(f"{name}: {error}") from None
        self.contents = ArchiveContents(header=header, collections=collections)

    def _at_terminator(self) -> bool:
        peek = read_exact(self.stream, 4)
        if peek == TERMINATOR:
            self.offset += 4
            return True
        if len(peek) < 4:
            raise BsonFormatError(f"{self.name}: truncated at byte {self.offset}")
        self._pending = peek
        return False

    def _document(self, what: str) -> dict[str, object] | None:
        pending, self._pending = self._pending, b""
        raw = read_document(_Prefixed(pending, self.stream), self.name, self.offset)
        if raw is None:
            return None
        self.offset += len(raw)
        try:
            return bson.decode(raw)
        except Exception as error:  # noqa: BLE001 - any decoding failure is a damaged archive
            raise BsonFormatError(f"{self.name}: {what} at byte {self.offset - len(raw)} is not valid BSON ({error})") from None

    def documents(self) -> Iterator[tuple[str, bytes]]:
        crcs: dict[str, int] = {}
        finished: set[str] = set()
        counts = self.contents.documents
        while True:
            header = self._document("a namespace header")
            if header is None:
                break
            namespace = f"{header.get('db')}.{header.get('collection')}"
            if header.get("EOF"):
                expected = int(header.get("CRC", 0))  # type: ignore[call-overload]
                actual = to_int64(crcs.get(namespace, 0))
                if expected != actual:
                    raise BsonFormatError(f"{self.name}: checksum mismatch for {namespace}: the archive says "
                                          f"{expected}, its documents give {actual}; the archive is damaged")
                finished.add(namespace)
                if not self._at_terminator():
                    raise BsonFormatError(f"{self.name}: no terminator after the end of {namespace}")
                continue
            if namespace in finished:
                raise BsonFormatError(f"{self.name}: documents for {namespace} after its end marker")
            while not self._at_terminator():
                pending, self._pending = self._pending, b""
                raw = read_document(_Prefixed(pending, self.stream), self.name, self.offset)
                if raw is None:
                    raise BsonFormatError(f"{self.name}: truncated inside {namespace} at byte {self.offset}")
                self.offset += len(raw)
                crcs[namespace] = crc_update(crcs.get(namespace, 0), raw)
                counts[namespace] = counts.get(namespace, 0) + 1
                yield namespace, raw
        known = {meta.data_namespace for meta in self.contents.collections if meta.data_namespace}
        unfinished = sorted((known | set(crcs)) - finished)
        if unfinished:
            raise BsonFormatError(f"{self.name}: truncated: no end marker for {', '.join(unfinished)}")


class _Prefixed:
    """A stream with a few already-read bytes put back in front."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self.prefix = prefix
        self.stream = stream

    def read(self, count: int) -> bytes:
        if self.prefix:
            head, self.prefix = self.prefix[:count], self.prefix[count:]
            return head if len(head) == count else head + self.stream.read(count - len(head))
        return self.stream.read(count)


class ArchiveWriter:
    """Writes an archive: ``begin`` once with every collection's metadata, then
    ``write_collection`` per collection (documents as raw bytes), then ``close``."""

    def __init__(self, stream: BinaryIO, server_version: str, tool_version: str):
        self.stream = stream
        self.server_version = server_version
        self.tool_version = tool_version
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.bytes_written += len(data)

    def begin(self, collections: Iterable[CollectionMeta]) -> None:
        self._write(MAGIC)
        self._write(bson.encode({"concurrent_collections": 1, "version": FORMAT_VERSION,
                                 "server_version": self.server_version, "tool_version": self.tool_version}))
        for meta in collections:
            self._write(bson.encode({"db": meta.db, "collection": meta.collection, "metadata": meta.metadata,
                                     "size": bson.int64.Int64(meta.size) if meta.size > 2**31 - 1 else meta.size,
                                     "type": meta.kind}))
        self._write(TERMINATOR)

    def write_collection(self, db: str, collection: str, documents: Iterable[bytes],
                         chunks: bool = False) -> tuple[int, int]:
        """Write one namespace's documents (none for a view: mongodump still ends every namespace
        with an EOF block, and mongorestore refuses an archive that lacks one); returns (count,
        crc as unsigned int). ``chunks``: each item is a run of whole documents back to back (a
        server reply batch), not one document."""
        count = 0
        crc = 0
        started = False
        for raw in documents:
            if not raw:
                continue
            if not started:
                self._write(bson.encode({"db": db, "collection": collection, "EOF": False,
                                         "CRC": bson.int64.Int64(0)}))
                started = True
            self._write(raw)
            crc = crc_update(crc, raw)
            count += count_documents(raw) if chunks else 1
        if started:
            self._write(TERMINATOR)
        self._write(bson.encode({"db": db, "collection": collection, "EOF": True,
                                 "CRC": bson.int64.Int64(to_int64(crc))}))
        self._write(TERMINATOR)
        return count, crc

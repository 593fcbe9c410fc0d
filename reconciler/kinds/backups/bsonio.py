"""Reading BSON documents back to back from a stream, with framing checks, in bounded memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import bson
from bson.errors import InvalidBSON

# A document is at most 16 MiB on the server; mongodump's own limit for reading is a little above.
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024
_LENGTH = struct.Struct("<i")


class Readable(Protocol):
    def read(self, count: int, /) -> bytes: ...


class BsonFormatError(ValueError):
    """A BSON stream is truncated or malformed (names the file and byte offset)."""


def read_exact(stream: Readable, count: int) -> bytes:
    """``count`` bytes, or fewer only at the end of the stream."""
    chunks = []
    while count:
        chunk = stream.read(count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_document(stream: Readable, name: str, offset: int) -> bytes | None:
    """The next document's raw bytes, None at a clean end of stream.

    Raises BsonFormatError for a truncated document, an impossible length, or a
    missing terminating zero byte.
    """
    head = read_exact(stream, 4)
    if not head:
        return None
    if len(head) < 4:
        raise BsonFormatError(f"{name}: truncated at byte {offset}: {len(head)} stray bytes where a document should start")
    (length,) = _LENGTH.unpack(head)
    if length < 5 or length > MAX_DOCUMENT:
        raise BsonFormatError(f"{name}: invalid BSON document length {length} at byte {offset}; the file is not BSON "
                              "or is damaged")
    body = read_exact(stream, length - 4)
    if len(body) < length - 4:
        raise BsonFormatError(f"{name}: truncated at byte {offset}: a {length}-byte document ends after "
                              f"{len(body) + 4} bytes")
    if body[-1] != 0:
        raise BsonFormatError(f"{name}: the document at byte {offset} does not end with a zero byte; the file is damaged")
    return head + body


def iter_documents(stream: BinaryIO, name: str, validate: bool = False) -> Iterator[bytes]:
    """Every document of a stream of BSON documents, as raw bytes (never decoded and
    re-encoded). ``validate`` also decodes each one to prove its content is valid BSON.

    Raises BsonFormatError naming the byte offset of the first bad document.
    """
    offset = 0
    while True:
        raw = read_document(stream, name, offset)
        if raw is None:
            return
        if validate:
            check_document(raw, name, offset)
        yield raw
        offset += len(raw)


def check_document(raw: bytes, name: str, offset: int) -> None:
    """Raises BsonFormatError when ``raw`` is not a valid BSON document."""
    try:
        bson.decode(raw)
    except (InvalidBSON, ValueError, OverflowError) as error:
        raise BsonFormatError(f"{name}: invalid BSON in the document at byte {offset} ({error})") from None

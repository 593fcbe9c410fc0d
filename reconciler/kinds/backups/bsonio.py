"""Reading BSON documents back to back from a stream, with framing checks, in bounded memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

# Dates stay milliseconds (bson.DatetimeMS): a date outside Python's datetime range (year 10000,
# ±8.64e15 ms) is valid BSON and must neither fail verification nor stop a restore.
CHECK: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)

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
    """Raises BsonFormatError when ``raw`` is not a valid BSON document (framing and every
    element checked; dates are not turned into Python datetimes)."""
    try:
        bson.decode(raw, codec_options=CHECK)
    except (InvalidBSON, ValueError, OverflowError) as error:
        raise BsonFormatError(f"{name}: invalid BSON in the document at byte {offset} ({error})") from None


_ZERO_TIMESTAMP = b"\x00" * 8
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x06: 0, 0x0A: 0, 0x7F: 0,
          0xFF: 0}


def top_level_elements(raw: bytes) -> Iterator[tuple[int, str, int, int]]:
    """``(type, name, start, end)`` of each top-level element of a valid document; ``raw[start:end]``
    is the whole element (type byte, name and value), as it would be re-framed in another document."""
    end_of_document = len(raw) - 1
    index = 4
    unpack = _LENGTH.unpack_from
    while index < end_of_document:
        kind = raw[index]
        name_end = raw.index(b"\x00", index + 1)
        value = name_end + 1
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):
            size = 4 + unpack(raw, value)[0]
        elif kind in (0x03, 0x04, 0x0F):
            size = unpack(raw, value)[0]
        elif kind == 0x05:
            size = 5 + unpack(raw, value)[0]
        elif kind == 0x0B:
            size = raw.index(b"\x00", raw.index(b"\x00", value) + 1) + 1 - value
        elif kind == 0x0C:
            size = 4 + unpack(raw, value)[0] + 12
        else:
            raise BsonFormatError(f"unknown BSON type 0x{kind:02x}")
        yield kind, raw[index + 1:name_end].decode("utf-8", "surrogateescape"), index, value + size
        index = value + size


def zero_timestamps(raw: bytes) -> list[str]:
    """Names of the top-level ``Timestamp(0, 0)`` fields of a document (the server replaces
    those with the current time on insert). Cheap when there are none."""
    if _ZERO_TIMESTAMP not in raw:
        return []
    return [name for kind, name, start, end in top_level_elements(raw)
            if kind == 0x11 and raw[end - 8:end] == _ZERO_TIMESTAMP]


def element_document(raw: bytes, start: int, end: int) -> bytes:
    """A one-element document holding ``raw[start:end]`` (e.g. a filter on ``_id``)."""
    return _LENGTH.pack(end - start + 5) + raw[start:end] + b"\x00"


def count_documents(chunk: bytes) -> int:
    """How many documents a run of whole documents back to back holds (a server reply batch).
    Raises BsonFormatError when the lengths do not add up to the chunk."""
    count = offset = 0
    unpack = _LENGTH.unpack_from
    end = len(chunk)
    while offset < end:
        if end - offset < 5:
            raise BsonFormatError(f"a batch of documents ends with {end - offset} stray bytes")
        length = unpack(chunk, offset)[0]
        if length < 5:
            raise BsonFormatError(f"invalid BSON document length {length} in a batch")
        offset += length
        count += 1
    if offset != end:
        raise BsonFormatError("the last document of a batch is truncated")
    return count

"""File names as text that round-trips exactly, including names that are not UTF-8.

POSIX names are bytes. The inventory (SQL) and plans (JSON) hold text, so a
name that is valid UTF-8 is stored as itself, and any other name (or one that
would be mistaken for an encoded one) as ``b64:`` + base64 of its bytes.
"""

from __future__ import annotations

import base64

PREFIX = "b64:"


def to_text(name: bytes) -> str:
    """The stored form of a relative path given as bytes."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return PREFIX + base64.b64encode(name).decode("ascii")
    if text.startswith(PREFIX):
        return PREFIX + base64.b64encode(name).decode("ascii")
    return text


def to_bytes(text: str) -> bytes:
    """The bytes of a stored path."""
    if text.startswith(PREFIX):
        return base64.b64decode(text[len(PREFIX) :])
    return text.encode("utf-8")


def parent_of(text: str) -> str:
    """The stored form of a path's directory ("" for the root)."""
    raw = to_bytes(text)
    head, _, _ = raw.rpartition(b"/")
    return to_text(head)

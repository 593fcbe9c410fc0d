"""Durations and sizes as humans write them in the config ("90s", "15m", "500GiB")."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ByteSize,
    PlainSerializer,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_FULL = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[smhdw]\s*)+$"


MAX_DURATION_SECONDS = 36500 * 86400  # 100 years: longer is a typo, and timedelta ends at 999,999,999 days


def parse_duration(value: Any) -> timedelta:
    """Turn ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``, ``"2w"`` or ``"1h30m"`` into a timedelta.

    A timedelta passes through; a bare number is not accepted (the unit must be explicit).

    Raises ValueError naming the accepted units when the text is not a duration.
    """
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not _DURATION_FULL.match(value):
        raise ValueError(
            f"invalid duration {value!r}: write a number and a unit, one of s, m, h, d, w "
            '(e.g. "90s", "15m", "1d")'
        )
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value))
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {value!r} is longer than 100 years; write at most \"36500d\"")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact text for a duration: 90 seconds -> "90s", one day -> "1d"."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if seconds % _DURATION_UNITS[unit] == 0:
            return f"{seconds // _DURATION_UNITS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "15m", "6h", "1d", "2w"]}),
]
"""A config duration: a string such as "15m", validated into a timedelta."""

def _size_or_say_how(value: Any, handler: ValidatorFunctionWrapHandler) -> ByteSize:
    """pydantic's ByteSize, with an error that says how to write a size."""
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(f"invalid size {value!r}: write a number of bytes, or a number and a unit "
                         '(e.g. "50MiB", "500GiB", "2TB")') from None


Size = Annotated[
    ByteSize,
    WrapValidator(_size_or_say_how),
    PlainSerializer(lambda size: size.human_readable(separator=""), return_type=str),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "examples": ["500GiB", "2TB"]}]}
    ),
]
"""A config size: an integer of bytes or a string such as "500GiB"."""


def human_bytes(count: int) -> str:
    """A short human text for a byte count: 1536 -> "1.5 KiB"."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")

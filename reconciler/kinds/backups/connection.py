"""Connecting to MongoDB without ever showing a password."""

from __future__ import annotations

import re
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from reconciler.errors import ObserveError

RAW = CodecOptions(document_class=RawBSONDocument)
_CREDENTIALS = re.compile(r"(mongodb(?:\+srv)?://)([^:@/]+):([^@/]*)@")


def redact(text: str) -> str:
    """Any ``mongodb://user:password@`` in ``text`` with the password replaced by ``***``."""
    return _CREDENTIALS.sub(lambda match: f"{match.group(1)}{match.group(2)}:***@", text)


def connect(uri: str, timeout_seconds: float = 5.0) -> Any:
    """A pymongo client that fails within ``timeout_seconds`` when the server is unreachable
    (pymongo is imported here: most commands never talk to a database).

    Raises ObserveError with the reason, the URI redacted.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    try:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(timeout_seconds * 1000), connectTimeoutMS=int(timeout_seconds * 1000),
            appname="reconciler")
        client.admin.command("ping")
        return client
    except PyMongoError as error:
        raise ObserveError(f"cannot reach {redact(uri)}: {redact(_first_line(error))}") from None
    except Exception as error:  # noqa: BLE001 - invalid URIs raise ConfigurationError/ValueError/InvalidURI
        raise ObserveError(f"invalid MongoDB URI {redact(uri)}: {redact(_first_line(error))}") from None


def _first_line(error: BaseException) -> str:
    """The cause, without pymongo's timeouts and topology description."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    for tail in (" (configured timeouts", ", Timeout:", ", Topology Description:"):
        text = text.split(tail, 1)[0]
    return text[:300]


def server_version(client: Any) -> str:
    from pymongo.errors import PyMongoError

    try:
        return str(client.admin.command("buildInfo").get("version") or "unknown")
    except PyMongoError:
        return "unknown"

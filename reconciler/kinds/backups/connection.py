"""Connecting to MongoDB without ever showing a password."""

from __future__ import annotations

from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from reconciler.errors import ObserveError
from reconciler.secrets import has_password, remember
from reconciler.secrets import redact as redact  # re-exported: the kind's modules import it from here

RAW = CodecOptions(document_class=RawBSONDocument)


def connect(uri: str, timeout_seconds: float = 5.0) -> Any:
    """A pymongo client that fails within ``timeout_seconds`` when the server is unreachable
    (pymongo is imported here: most commands never talk to a database).

    Raises ObserveError with the reason, the URI redacted.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    remember(uri)
    try:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(timeout_seconds * 1000), connectTimeoutMS=int(timeout_seconds * 1000),
            appname="reconciler")
        client.admin.command("ping")
        return client
    except PyMongoError as error:
        raise ObserveError(f"cannot reach {redact(uri)}: {redact(_first_line(error))}") from None
    except Exception as error:  # noqa: BLE001 - invalid URIs raise ConfigurationError/ValueError/InvalidURI
        if has_password(uri):  # the driver's message may quote a piece of a malformed password
            raise ObserveError(f"invalid MongoDB URI {redact(uri)}: check its syntax; a password holding any of "
                               "@ : / ? # [ ] % must be percent-encoded (urllib.parse.quote_plus)") from None
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

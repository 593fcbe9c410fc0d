"""Connecting to MongoDB without ever showing a password."""

from __future__ import annotations

from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from reconciler.errors import ObserveError
from reconciler.secrets import has_password, remember, user_of
from reconciler.secrets import redact as redact  # re-exported: the kind's modules import it from here

RAW = CodecOptions(document_class=RawBSONDocument)


def connect(uri: str, timeout_seconds: float = 5.0, user_hint: str | None = None) -> Any:
    """A pymongo client that fails within ``timeout_seconds`` when the server is unreachable
    (pymongo is imported here: most commands never talk to a database).

    ``user_hint``: the environment variable the URI came from, named in a failed login.
    Raises ObserveError with the reason (one line each: no answer, failed login, invalid
    URI), the URI redacted.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    remember(uri)
    try:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(timeout_seconds * 1000), connectTimeoutMS=int(timeout_seconds * 1000),
            appname="reconciler")
    except Exception as error:  # noqa: BLE001 - invalid URIs raise ConfigurationError/ValueError/InvalidURI
        if has_password(uri):  # the driver's message may quote a piece of a malformed password
            raise ObserveError(f"invalid MongoDB URI {redact(uri)}: check its syntax; a password holding any of "
                               "@ : / ? # [ ] % must be percent-encoded (urllib.parse.quote_plus)") from None
        raise ObserveError(f"invalid MongoDB URI {redact(uri)}: {redact(_first_line(error))}") from None
    try:
        client.admin.command("ping")
        return client
    except PyMongoError as error:
        client.close()
        raise ObserveError(describe_server_error(error, uri, user_hint)) from None


def _user_and_hosts(uri: str) -> tuple[str | None, str]:
    try:
        from pymongo.uri_parser import parse_uri

        parsed = parse_uri(uri, validate=False, warn=True) if not uri.startswith("mongodb+srv://") else None
    except Exception:  # noqa: BLE001 - an unparsable URI: no user, the redacted text as the host
        parsed = None
    if parsed is None:
        host = redact(uri).split("@")[-1].split("/")[0].split("?")[0].split("://")[-1]
        return user_of(uri), host
    hosts = ",".join(f"{host}:{port}" for host, port in parsed.get("nodelist", []))
    return parsed.get("username"), hosts


def describe_server_error(error: BaseException, uri: str, user_hint: str | None = None) -> str:
    """One line for what the server did: no answer, failed login, refused command (its message)."""
    from pymongo.errors import ConnectionFailure, OperationFailure, ServerSelectionTimeoutError

    user, hosts = _user_and_hosts(uri)
    details = getattr(error, "details", None) or {}
    code = getattr(error, "code", None)
    if isinstance(error, OperationFailure) and (code == 18 or "Authentication failed" in str(error)):
        where = f"${user_hint}" if user_hint else "the connection string"
        return f"authentication failed for {user or '(no user)'} on {hosts} (check the password in {where})"
    if isinstance(error, (ServerSelectionTimeoutError, ConnectionFailure)):
        return f"cannot reach {redact(uri)}: {redact(_first_line(error))}"
    if isinstance(error, OperationFailure):
        message = details.get("errmsg") or _first_line(error)
        name = details.get("codeName") or code
        return f"the server at {hosts} refused the command: {redact(str(message))} ({name})"
    return f"{hosts}: {redact(_first_line(error))}"


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


def server_hosts(client: Any) -> str:
    """``host:port[,host:port]`` of a client (never credentials)."""
    try:
        return ",".join(f"{host}:{port}" for host, port in sorted(client.topology_description.server_descriptions()))
    except Exception:  # noqa: BLE001 - only for messages
        return "the server"

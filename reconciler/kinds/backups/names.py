"""Namespace names as the MongoDB database tools spell them.

Directory dumps: mongodump writes each collection's file name with Go's
``url.QueryEscape`` (``with/slash`` -> ``with%2Fslash``, ``pct%2Fname`` ->
``pct%252Fname``, a space -> ``+``) and mongorestore unescapes it; so do we.

Namespace patterns (``--ns-include``, ``--ns-exclude``, ``--ns-from``/``--ns-to``):
mongorestore's ``*`` wildcard matches any run of characters (dots included);
``\\*`` and ``\\\\`` are a literal asterisk and backslash. In ``--ns-from`` each
``*`` captures what it matched, and the same-numbered ``*`` of ``--ns-to``
puts it back.

Pure functions: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_plus

# mongodump (mongo-tools prepare.go) keeps these system collections of a user database;
# the rest of system.* is the server's own.
KEPT_SYSTEM = ("system.js",)
BUCKETS_PREFIX = "system.buckets."


def escape_collection(name: str) -> str:
    """A collection name as a file name, as mongodump writes it (Go's url.QueryEscape)."""
    return quote_plus(name, safe="")


def unescape_collection(name: str) -> str:
    """The collection name of a mongodump file name (mongorestore's url.QueryUnescape)."""
    try:
        return unquote_plus(name, errors="strict")
    except UnicodeDecodeError:
        return name


def pattern_regex(pattern: str, capture: bool = False) -> re.Pattern[str]:
    """mongorestore's namespace pattern as a regular expression over ``db.collection``."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        if char == "*":
            parts.append("(.*?)" if capture else ".*")
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


def _wildcards(pattern: str) -> int:
    return len(re.findall(r"(?<!\\)\*", pattern))


@dataclass(frozen=True)
class Rename:
    source: str  # --ns-from pattern
    target: str  # --ns-to pattern

    def apply(self, namespace: str) -> str | None:
        """The renamed namespace, or None when ``namespace`` does not match ``source``."""
        match = pattern_regex(self.source, capture=True).match(namespace)
        if match is None:
            return None
        groups = iter(match.groups())
        out: list[str] = []
        index = 0
        while index < len(self.target):
            char = self.target[index]
            if char == "\\" and index + 1 < len(self.target):
                out.append(self.target[index + 1])
                index += 2
                continue
            out.append(next(groups, "") if char == "*" else char)
            index += 1
        return "".join(out)


def check_rename(source: str, target: str) -> str | None:
    """Why a --ns-from/--ns-to pair is unusable, or None."""
    if _wildcards(source) != _wildcards(target):
        return (f"--ns-from {source!r} and --ns-to {target!r} must have the same number of * wildcards "
                f"({_wildcards(source)} and {_wildcards(target)})")
    if "." not in source.replace("\\.", "") or "." not in target.replace("\\.", ""):
        return f"--ns-from {source!r} / --ns-to {target!r}: write namespaces as DATABASE.COLLECTION"
    return None


def server_internal(db: str, collection: str) -> str | None:
    """Why mongorestore leaves a namespace alone (None when it restores it)."""
    if db in ("local", "config"):
        return f"the {db} database belongs to the server"
    if db == "admin" and collection.startswith("system."):
        if collection in ("system.users", "system.roles"):
            return "users and roles are restored only with --users-and-roles"
        return "server-internal"
    if collection == "system.views":
        return "view definitions are restored from the views' own metadata"
    if collection.startswith("system.") and collection not in KEPT_SYSTEM \
            and not collection.startswith(BUCKETS_PREFIX):
        return "server-internal"
    return None

"""Consistent snapshots: the oplog entries written while a dump ran, and their replay.

mongodump ``--oplog`` notes the newest oplog entry before it reads any collection,
and after the last one copies every oplog entry written since; mongorestore
``--oplogReplay`` applies them after the documents, so the restored data is the
state at the end of the dump, whatever was written while it ran. We do the same
for one database: the entries on its namespaces, and the transactions
(``applyOps`` commands) that touch it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from reconciler.errors import ApplyError
from reconciler.providers.mongo.connection import RAW

OPLOG = "oplog.rs"


@dataclass
class OplogWindow:
    client: Any
    database: str
    start: Any  # bson.Timestamp of the newest entry before the dump

    @classmethod
    def open(cls, client: Any, database: str) -> OplogWindow:
        """Note where the oplog stands. Raises ApplyError when the server has no oplog."""
        if not client.admin.command("hello").get("setName"):
            raise ApplyError(f'consistent = "oplog" needs a replica set, and the server holding {database} is a '
                             "standalone (it has no oplog); remove the option or run the server as a replica set")
        newest = client.local[OPLOG].find_one({}, sort=[("$natural", -1)], projection={"ts": 1})
        if newest is None:
            raise ApplyError("the server's oplog is empty; cannot take a consistent snapshot")
        return cls(client, database, newest["ts"])

    def _filter(self) -> dict[str, Any]:
        prefix = f"^{_regex_escape(self.database)}\\."
        return {"ts": {"$gt": self.start},
                "$or": [{"ns": {"$regex": prefix}},
                        {"op": "c", "ns": "admin.$cmd", "o.applyOps.ns": {"$regex": prefix}}]}

    def entries(self) -> Iterator[bytes]:
        """The raw oplog entries on this database written since ``start``, oldest first.

        Raises ApplyError when the oplog no longer reaches back to ``start`` (it rolled over
        while the dump ran: the backup would not be consistent).
        """
        oplog = self.client.local.get_collection(OPLOG, codec_options=RAW)
        oldest = self.client.local[OPLOG].find_one({}, sort=[("$natural", 1)], projection={"ts": 1})
        if oldest is None or oldest["ts"] > self.start:
            raise ApplyError("the oplog rolled over while the dump ran; the snapshot would not be consistent "
                             "(make the oplog larger, or dump when fewer writes happen)")
        for entry in oplog.find(self._filter(), sort=[("$natural", 1)]):
            yield entry.raw


def _regex_escape(text: str) -> str:
    import re

    return re.escape(text)


# Fields a replayed entry may not carry into applyOps on another server.
_DROPPED = ("ui", "lsid", "txnNumber", "stmtId", "prevOpTime", "wall", "t", "v", "h", "version")


def _rewrite(op: dict[str, Any], rename: Any) -> dict[str, Any] | None:
    """One operation ready for applyOps on the target: ``ns`` renamed (None: not restored)."""
    ns = op.get("ns", "")
    if op.get("op") == "c" and ns == "admin.$cmd" and isinstance(op.get("o"), dict) and "applyOps" in op["o"]:
        inner = [rewritten for item in op["o"]["applyOps"] if (rewritten := _rewrite(item, rename)) is not None]
        return {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": inner}} if inner else None
    target = rename(ns)
    if target is None:
        return None
    out = {key: value for key, value in op.items() if key not in _DROPPED}
    out["ns"] = target
    if out.get("op") == "c":
        return None  # DDL inside the window (create, drop, ...): refused below by the caller
    return out


def replay(client: Any, entries: list[bytes], rename: Any) -> int:
    """Apply oplog entries in order (mongorestore --oplogReplay); ``rename(ns)`` gives the target
    namespace or None to leave the entry out. Returns how many were applied.

    Raises ApplyError when an entry is a command (DDL) or the server refuses one.
    """
    from pymongo.errors import PyMongoError

    codec: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
        datetime_conversion=bson.DatetimeConversion.DATETIME_MS)
    applied = 0
    for raw in entries:
        entry = bson.decode(raw if not isinstance(raw, RawBSONDocument) else raw.raw, codec_options=codec)
        if entry.get("op") == "n":
            continue
        if entry.get("op") == "c" and entry.get("ns") != "admin.$cmd":
            raise ApplyError(f"the backup's oplog holds a command on {entry.get('ns')} "
                             f"({next(iter(entry.get('o', {})), '?')}), which restore does not replay")
        op = _rewrite(entry, rename)
        if op is None:
            continue
        operations = op["o"]["applyOps"] if op.get("op") == "c" else [op]  # a transaction: all its ops at once
        try:
            client.admin.command("applyOps", operations, codec_options=codec)
        except PyMongoError as error:
            raise ApplyError(f"replaying the oplog entry at {entry.get('ts')} on {entry.get('ns')} failed: "
                             f"{str(error).splitlines()[0]}") from None
        applied += 1
    return applied

"""Trim (numcopies): remove origin files that enough replicas provably hold.

``[origins.X] trim = { min_copies = 2, older_than = "30d" }`` proposes a destructive
``trim`` action (address ``origin:X``) for origin files older than ``older_than`` whose
copies on at least ``min_copies`` replicas were verified by sha256 within their replica's
``scrub_every``. Replicas without ``scrub_every`` never count. No trim at all is proposed
while any replica of the origin is offline or could not be observed (the reason is a
note). Right before deleting, the executor checks each counted copy again where it lies
(size, mtime to the second, sha256) and the origin file (size, mtime as recorded); a
file is deleted only with ``min_copies`` copies that pass, and is recorded *trimmed*
(not gone) first, so a run killed at any point leaves no file deleted without its proven
copies (a file recorded trimmed but still there is simply found present again).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.engine import Connection

from reconciler.errors import ApplyError
from reconciler.kinds.replicas import inventory, paths
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import KilledBySignal, Streamed, require

SECOND = 1_000_000_000


class Trimmable(NamedTuple):
    paths: list[str]
    sizes: list[int]
    old: int  # files older than older_than in all (the rest lack proven copies)


def _counted_clause(counted: dict[str, datetime], parameters: dict[str, object]) -> str:
    parts = []
    for index, (replica, since) in enumerate(sorted(counted.items())):
        parameters[f"r{index}"] = replica
        parameters[f"s{index}"] = since
        parts.append(f"(c.replica = :r{index} AND c.checked_at >= :s{index})")
    return " OR ".join(parts) or "1 = 0"


def trimmable(connection: Connection, origin: str, older_than_ns: int, min_copies: int,
              counted: dict[str, datetime]) -> Trimmable:
    """Files of ``origin`` with mtime before ``older_than_ns`` and at least ``min_copies``
    copies on the ``counted`` replicas (key: verified since then) matching the origin's sha256."""
    parameters: dict[str, object] = {"origin": origin, "older": older_than_ns, "false": False, "min": min_copies}
    clause = _counted_clause(counted, parameters)
    present = ("f.origin = :origin AND f.gone_since IS NULL AND f.from_replica = :false AND f.trimmed_at IS NULL "
               "AND f.mtime_ns < :older")
    old = connection.execute(text(f"SELECT COUNT(*) FROM origin_files f WHERE {present}"), parameters).scalar() or 0
    result = Trimmable([], [], int(old))
    if not old:
        return result
    query = f"""
        SELECT f.path, f.size FROM origin_files f JOIN replica_copies c ON c.file_id = f.id
        WHERE {present} AND f.sha256 IS NOT NULL
          AND c.corrupt_since IS NULL AND c.sha256 = f.sha256 AND c.size = f.size AND c.mtime_ns = f.mtime_ns
          AND ({clause})
        GROUP BY f.id, f.path, f.size HAVING COUNT(*) >= :min ORDER BY f.path
    """
    for block in inventory.fetch_blocks(connection, query, parameters):
        for path, size in block:
            result.paths.append(path)
            result.sizes.append(int(size))
    return result


class Proof(NamedTuple):
    size: int
    mtime_ns: int
    sha256: str
    copies: dict[str, tuple[int, int, str]]  # replica -> (size, mtime_ns, sha256) recorded


def proofs(connection: Connection, origin: str, files: list[str], counted: dict[str, datetime]) -> dict[str, Proof]:
    """What the state holds now for each of ``files`` and its counted copies."""
    scan_id = inventory.new_scan_id()
    parameters: dict[str, object] = {"origin": origin, "scan": scan_id, "false": False}
    clause = _counted_clause(counted, parameters)
    try:
        inventory.load_paths(connection, scan_id, ((path, 0, 0) for path in files), with_dirs=False)
        rows = connection.execute(text(f"""
            SELECT f.path, f.size, f.mtime_ns, f.sha256, c.replica, c.size, c.mtime_ns, c.sha256
            FROM scan_entries s JOIN origin_files f ON f.origin = :origin AND f.path = s.path
            JOIN replica_copies c ON c.file_id = f.id
            WHERE s.scan_id = :scan AND f.gone_since IS NULL AND f.from_replica = :false AND f.trimmed_at IS NULL
              AND f.sha256 IS NOT NULL AND c.corrupt_since IS NULL AND c.sha256 = f.sha256
              AND c.size = f.size AND c.mtime_ns = f.mtime_ns AND ({clause})
        """), parameters)
        found: dict[str, Proof] = {}
        for path, size, mtime, digest, replica, copy_size, copy_mtime, copy_digest in rows:
            proof = found.setdefault(path, Proof(int(size), int(mtime), digest, {}))
            proof.copies[replica] = (int(copy_size), int(copy_mtime), copy_digest)
        return found
    finally:
        inventory.drop_scan(connection, scan_id)


def stat_files(location: Location, settings: SshSettings, root: str, names: list[bytes]
               ) -> dict[bytes, tuple[int, int] | None]:
    """(size, mtime in ns; to the second over ssh) of each ``root/name``, None when absent."""
    found: dict[bytes, tuple[int, int] | None] = dict.fromkeys(names)
    if not location.is_remote:
        top = os.fsencode(root)
        for name in names:
            try:
                stat = os.stat(os.path.join(top, name), follow_symlinks=False)
            except OSError:
                continue
            found[name] = (stat.st_size, stat.st_mtime_ns)
        return found
    if not names:
        return found
    script = f"cd {shlex.quote(root)} || exit 3; exec xargs -0 -r stat --printf '%s %Y %n\\0' --"
    run = Streamed(require("ssh", "openssh-client"), [*location.ssh_args(settings)[1:], script],
                   b"".join(name + b"\0" for name in names))
    buffer = b""
    try:
        for chunk in run.chunks():
            buffer += chunk
            *records, buffer = buffer.split(b"\0")
            for record in records:
                size, mtime, name = record.split(b" ", 2)
                if name in found:
                    found[name] = (int(size), int(mtime) * SECOND)
    except KilledBySignal as killed:
        raise ApplyError(f"checking files on {location.destination} failed: ssh was {killed}") from None
    if run.exit_code not in (0, 123):
        said = [line for line in run.stderr if line.strip()]
        raise ApplyError(f"checking files on {location.destination} failed: "
                         f"{said[-1] if said else f'exit {run.exit_code}'}")
    return found


def same_second(a: int, b: int) -> bool:
    return a // SECOND == b // SECOND


def delete_files(location: Location, settings: SshSettings, names: list[bytes]) -> list[bytes]:
    """Remove ``names`` (relative to the origin's root); returns those no longer there."""
    if not location.is_remote:
        top = os.fsencode(location.path)
        removed = []
        for name in names:
            try:
                os.unlink(os.path.join(top, name))
            except FileNotFoundError:
                pass
            except OSError as error:
                raise ApplyError(f"cannot remove {os.fsdecode(os.path.join(top, name))}: {error.strerror}") from None
            removed.append(name)
        return removed
    script = f"cd {shlex.quote(location.path)} || exit 3; exec xargs -0 -r rm -f --"
    run = Streamed(require("ssh", "openssh-client"), [*location.ssh_args(settings)[1:], script],
                   b"".join(name + b"\0" for name in names))
    for _ in run.chunks():
        pass
    if run.exit_code != 0:
        said = [line for line in run.stderr if line.strip()]
        raise ApplyError(f"removing files on {location.destination} failed: "
                         f"{said[-1] if said else f'exit {run.exit_code}'}")
    return list(names)


def mark_trimmed(connection: Connection, origin: str, files: list[str], when: datetime | None) -> None:
    """Record ``files`` as trimmed (``when``), or not trimmed (None) when their removal failed."""
    scan_id = inventory.new_scan_id()
    inventory.load_paths(connection, scan_id, ((path, 0, 0) for path in files), with_dirs=False)
    connection.execute(text(
        "UPDATE origin_files SET trimmed_at = :when WHERE origin = :origin AND path IN "
        "(SELECT path FROM scan_entries WHERE scan_id = :scan)"), {"when": when, "origin": origin, "scan": scan_id})
    # The origin's live files changed: its generation says so (the totals counted before are outdated).
    connection.execute(text("UPDATE origin_status SET generation = generation + 1 WHERE origin = :origin"),
                       {"origin": origin})
    inventory.drop_scan(connection, scan_id)


def batches(items: list[str], size: int = 2000) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


__all__ = ["Trimmable", "trimmable", "proofs", "stat_files", "delete_files", "mark_trimmed", "same_second",
           "batches", "paths"]

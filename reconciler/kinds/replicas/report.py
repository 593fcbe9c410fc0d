"""The replicas' part of the report (completeness, content, history charts) and the figures each
run records for that history: files and bytes per origin and per replica, what each replica
lacks (its lag), and the free space of each local replica."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text

from reconciler.engine.report import Measure, ReportContext, ReportSection, fragment

ORDER = 10


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def section(desired: Any, ctx: ReportContext) -> ReportSection:
    """Per replica: what it holds and lacks, when it was synced and verified, marked as not
    current when this report's observation of it failed; then storage, lag and free space over time."""
    from reconciler.kinds.replicas.commands import replica_rows_of

    rows = replica_rows_of(desired, ctx.state, ctx.base_dir) if desired.replicas else []
    problems = []
    for row in rows:
        row["error"] = ctx.error_of(row["address"])
        if row.get("offline_since"):  # never a quiet "all good" about copies not observed or not sound
            problems.append(f"{row['address']}: offline since {row['offline_since']}")
        if row.get("lost"):
            problems.append(f"{row['address']}: {row['lost']:,} files lost (no good copy anywhere)")
        if row.get("corrupt"):
            problems.append(f"{row['address']}: {row['corrupt']:,} corrupt copies")
    data = {"rows": rows, "origins": ctx.history("origin", "bytes"), "origin_files": ctx.history("origin", "files"),
            "lag": ctx.history("replica", "missing_bytes"), "free": ctx.history("replica", "free_bytes")}
    return ReportSection(key="replicas", title="Replicas", template=fragment(__package__), data=data, order=ORDER,
                         count=f"{len(rows)} {'replica' if len(rows) == 1 else 'replicas'}", problems=problems)


def measure(desired: Any, state: Any, base_dir: Any) -> list[Measure]:
    """Files and bytes per origin as of its last scan; per replica what it holds and lacks as the
    inventory knows it after this run, and the free space of a local replica's file system now.
    Replicas offline (removable, absent) are left out. Cheap: a few set-based queries per replica
    (what a replica lacks of an origin is not queried when the observer recorded the pair complete
    at the origin's current inventory generation) and one statvfs; a remote replica's free space is
    not measured (it would take a connection)."""
    from reconciler.kinds.replicas.commands import held_and_missing
    from reconciler.kinds.replicas.config import origins_of, replica_location
    from reconciler.kinds.replicas.diff import replica_address
    from reconciler.kinds.replicas.tables import OriginStatus, PairStatus, ReplicaStatus

    if not desired.origins and not desired.replicas:
        return []
    now = datetime.now(UTC)
    found: list[Measure] = []
    origin_status = OriginStatus.__table__  # type: ignore[attr-defined]
    replica_status = ReplicaStatus.__table__  # type: ignore[attr-defined]
    with state.engine.connect() as connection:
        scans = {origin: _aware(last) for origin, last in
                 connection.execute(select(origin_status.c.origin, origin_status.c.last_scan))}
        totals = {origin: (int(files or 0), int(size or 0)) for origin, files, size in connection.execute(text(
            "SELECT origin, COUNT(*), COALESCE(SUM(size), 0) FROM origin_files WHERE gone_since IS NULL "
            "AND from_replica = :false AND trimmed_at IS NULL GROUP BY origin"), {"false": False})}
        for name in desired.origins:
            scanned = scans.get(name)
            if scanned is None:
                continue
            files, size = totals.get(name, (0, 0))
            found += [Measure(f"origin:{name}", "files", files, scanned),
                      Measure(f"origin:{name}", "bytes", size, scanned)]
        offline = {key for key, since in connection.execute(
            select(replica_status.c.replica, replica_status.c.offline_since)) if since is not None}
        generations = {origin: generation for origin, generation in
                       connection.execute(select(origin_status.c.origin, origin_status.c.generation))}
        pair_status = PairStatus.__table__  # type: ignore[attr-defined]
        complete = {(replica, origin) for replica, origin, generation in connection.execute(
            select(pair_status.c.replica, pair_status.c.origin, pair_status.c.complete_generation))
            if generation >= 0 and generations.get(origin) == generation}
        for key, replica in desired.replicas.items():
            if key in offline:
                continue
            address = replica_address(key)
            origins = origins_of(desired, replica)
            held_files, held_bytes, missing_files, missing_bytes = held_and_missing(
                connection, key, origins, {origin for origin in origins if (key, origin) in complete})
            found += [Measure(address, "files", held_files, now), Measure(address, "bytes", held_bytes, now),
                      Measure(address, "missing_files", missing_files, now),
                      Measure(address, "missing_bytes", missing_bytes, now)]
            location = replica_location(key, base_dir)
            if not location.is_remote:
                try:
                    usage = shutil.disk_usage(location.path)
                except OSError:
                    continue
                found.append(Measure(address, "free_bytes", usage.free, datetime.now(UTC)))
    return found

"""The replicas' part of the report (completeness, content, history charts) and the figures each
run records for that history: files and bytes per origin and per replica, what each replica
lacks (its lag), and the free space of each local replica."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from reconciler.engine.report import Measure, ReportContext, ReportSection, fragment

ORDER = 10
log = logging.getLogger("reconciler.history")


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
    not measured (it would take a connection).

    An origin's live files and bytes, and a replica's held ones, are counted over the inventory
    only when it changed since they were last counted: each count is kept beside the generation it
    was made at (origin_status.generation, which every change of an origin's live files bumps;
    replica_status.copies_generation, which every change of a replica's copy records bumps) and
    reused while that generation stands. A no-change run so costs no pass over the inventory."""
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
    counted_origins: list[dict[str, Any]] = []  # counts made now, kept for the next run (below)
    counted_replicas: list[dict[str, Any]] = []
    with state.engine.connect() as connection:
        # The generations are read before anything is counted: a count kept with a generation
        # then includes at least every change that generation stands for (see _keep_counts).
        origins = {row.origin: row for row in connection.execute(select(
            origin_status.c.origin, origin_status.c.last_scan, origin_status.c.generation,
            origin_status.c.live_files, origin_status.c.live_bytes, origin_status.c.counted_generation))}
        statuses = {row.replica: row for row in connection.execute(select(
            replica_status.c.replica, replica_status.c.offline_since, replica_status.c.copies_generation,
            replica_status.c.held_files, replica_status.c.held_bytes, replica_status.c.held_generation))}
        for name in desired.origins:
            row = origins.get(name)
            if row is None or row.last_scan is None:
                continue
            scanned = _aware(row.last_scan)
            assert scanned is not None
            if row.counted_generation == row.generation and row.live_files is not None:
                files, size = int(row.live_files), int(row.live_bytes or 0)
            else:
                files, size = _live_totals(connection, name)
                counted_origins.append({"key": name, "generation": row.generation, "files": files, "bytes": size})
            found += [Measure(f"origin:{name}", "files", files, scanned),
                      Measure(f"origin:{name}", "bytes", size, scanned)]
        offline = {key for key, status in statuses.items() if status.offline_since is not None}
        generations = {origin: row.generation for origin, row in origins.items()}
        pair_status = PairStatus.__table__  # type: ignore[attr-defined]
        complete = {(replica, origin) for replica, origin, generation in connection.execute(
            select(pair_status.c.replica, pair_status.c.origin, pair_status.c.complete_generation))
            if generation >= 0 and generations.get(origin) == generation}
        for key, replica in desired.replicas.items():
            if key in offline:
                continue
            address = replica_address(key)
            origins_of_replica = origins_of(desired, replica)
            status = statuses.get(key)
            held = None
            if status is not None and status.held_generation == status.copies_generation \
                    and status.held_files is not None:
                held = (int(status.held_files), int(status.held_bytes or 0))
            held_files, held_bytes, missing_files, missing_bytes = held_and_missing(
                connection, key, origins_of_replica,
                {origin for origin in origins_of_replica if (key, origin) in complete}, held)
            if held is None and status is not None:  # a replica without a status row keeps no count
                counted_replicas.append({"key": key, "generation": status.copies_generation,
                                         "files": held_files, "bytes": held_bytes})
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
    _keep_counts(state, counted_origins, counted_replicas)
    return found


LIVE_TOTALS = ("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM origin_files WHERE origin = :o AND gone_since IS NULL "
               "AND from_replica = :false AND trimmed_at IS NULL")


def _live_totals(connection: Any, origin: str) -> tuple[int, int]:
    """The files and bytes ``origin`` holds as the inventory knows them (neither gone, trimmed,
    nor known only from a replica)."""
    files, size = connection.execute(text(LIVE_TOTALS), {"o": origin, "false": False}).one()
    return int(files or 0), int(size or 0)


def _keep_counts(state: Any, origins: list[dict[str, Any]], replicas: list[dict[str, Any]]) -> None:
    """Keep the counts just made beside the generations read before they were made, each only
    while its generation still stands: a change committed since (which bumped it) leaves the
    count unkept, so a kept count never misses a change its generation stands for."""
    if not origins and not replicas:
        return
    try:
        with state.engine.begin() as connection:
            if origins:
                connection.execute(text(
                    "UPDATE origin_status SET live_files = :files, live_bytes = :bytes, "
                    "counted_generation = :generation WHERE origin = :key AND generation = :generation"), origins)
            if replicas:
                connection.execute(text(
                    "UPDATE replica_status SET held_files = :files, held_bytes = :bytes, "
                    "held_generation = :generation WHERE replica = :key AND copies_generation = :generation"),
                    replicas)
    except SQLAlchemyError as error:  # the figures stand; the next run counts again
        log.debug("the counted totals were not kept: %s", error)

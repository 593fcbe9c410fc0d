"""``reconciler replicas list`` and ``reconciler inventory stats``: read the inventory
as of the last plan or apply (they do not scan)."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select, text

from reconciler.kinds.replicas import inventory
from reconciler.kinds.replicas.diff import replica_address
from reconciler.kinds.replicas.kind import _origins_of, replica_location
from reconciler.kinds.replicas.tables import OriginStatus, ReplicaStatus
from reconciler.units import human_bytes

STATUS = ReplicaStatus.__table__  # type: ignore[attr-defined]
ORIGIN_STATUS = OriginStatus.__table__  # type: ignore[attr-defined]


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def replica_rows(app: Any) -> list[dict[str, Any]]:
    """Per configured replica: what it holds and misses, and when it was synced and verified."""
    desired = app.config.model
    rows = []
    with app.store.engine.connect() as connection:
        for key, replica in desired.replicas.items():
            origins = _origins_of(desired, replica)
            held_files, held_bytes = connection.execute(
                text("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM replica_copies WHERE replica = :r"), {"r": key}
            ).one()
            missing_files = missing_bytes = 0
            for origin in origins:
                missing = connection.execute(
                    text("SELECT COUNT(*), COALESCE(SUM(f.size), 0) FROM origin_files f "
                         "LEFT JOIN replica_copies c ON c.file_id = f.id AND c.replica = :r "
                         "WHERE f.origin = :o AND f.gone_since IS NULL AND f.from_replica = :false "
                         "AND (c.file_id IS NULL OR c.size <> f.size OR c.mtime_ns <> f.mtime_ns)"),
                    {"r": key, "o": origin, "false": False},
                ).one()
                missing_files += missing[0]
                missing_bytes += int(missing[1])
            status = connection.execute(
                select(STATUS.c.last_sync, STATUS.c.last_verify, STATUS.c.offline_since)
                .where(STATUS.c.replica == key)
            ).first()
            verified, corrupt = connection.execute(text(
                "SELECT COALESCE(SUM(CASE WHEN checked_at IS NOT NULL AND corrupt_since IS NULL THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN corrupt_since IS NOT NULL THEN 1 ELSE 0 END), 0) "
                "FROM replica_copies WHERE replica = :r"), {"r": key}).one()
            lost = sum(inventory.lost_files(connection, key, origin)[0] for origin in origins)
            rows.append({
                "address": replica_address(key),
                "url": str(replica_location(key, app.config.base_dir)),
                "origins": origins,
                "files": int(held_files),
                "bytes": int(held_bytes),
                "missing_files": missing_files,
                "missing_bytes": missing_bytes,
                "last_sync": _iso(status[0]) if status else None,
                "last_verify": _iso(status[1]) if status else None,
                "offline_since": _iso(status[2]) if status else None,
                "verified": int(verified),
                "unverified": int(held_files) - int(verified) - int(corrupt),
                "corrupt": int(corrupt),
                "lost": lost,
            })
    return rows


@click.group("replicas")
def replicas_group() -> None:
    """Replicas of origin files (as of the last plan or apply)."""


@replicas_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_replicas(app: Any, as_json: bool) -> None:
    """Per replica: URL, origins, files and bytes held and missing, last sync and verify."""
    rows = replica_rows(app)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['address']}  ({row['url']})")
        click.echo(f"  origins:  {', '.join(row['origins']) or '-'}")
        click.echo(f"  holds:    {row['files']:,} files, {human_bytes(row['bytes'])}")
        click.echo(f"  missing:  {row['missing_files']:,} files, {human_bytes(row['missing_bytes'])}")
        click.echo(f"  synced:   {row['last_sync'] or 'never'}    verified: {row['last_verify'] or 'never'}")
        click.echo(f"  content:  {row['verified']:,} verified, {row['unverified']:,} unverified, "
                   f"{row['corrupt']:,} corrupt, {row['lost']:,} lost")
        if row["offline_since"]:
            click.echo(f"  offline since {row['offline_since']} (removable; its root or marker is absent)")


@click.group("inventory")
def inventory_group() -> None:
    """The file inventory (as of the last plan or apply)."""


@inventory_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inventory_stats(app: Any, as_json: bool) -> None:
    """Per origin: files and bytes present, files gone, files known only from a replica, last scan."""
    with app.store.engine.connect() as connection:
        scans = {origin: last_scan for origin, last_scan in
                 connection.execute(select(ORIGIN_STATUS.c.origin, ORIGIN_STATUS.c.last_scan))}
        result = connection.execute(text(
            "SELECT f.origin, "
            "SUM(CASE WHEN f.gone_since IS NULL AND f.from_replica = :false THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.gone_since IS NULL AND f.from_replica = :false THEN f.size ELSE 0 END), "
            "SUM(CASE WHEN f.gone_since IS NOT NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.from_replica = :true THEN 1 ELSE 0 END) "
            "FROM origin_files f GROUP BY f.origin ORDER BY f.origin"), {"false": False, "true": True})
        rows = [{"origin": origin, "files": int(files or 0), "bytes": int(size or 0), "gone": int(gone or 0),
                 "known_only_from_replica": int(enrolled or 0), "last_scan": _iso(scans.get(origin))}
                for origin, files, size, gone, enrolled in result]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("The inventory is empty: run `reconciler plan` to scan the origins.")
    for row in rows:
        click.echo(f"{row['origin']}: {row['files']:,} files, {human_bytes(row['bytes'])}; {row['gone']:,} gone; "
                   f"{row['known_only_from_replica']:,} known only from a replica; last scan {row['last_scan'] or 'never'}")

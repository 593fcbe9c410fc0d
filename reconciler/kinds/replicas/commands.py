"""``reconciler replicas list`` and ``reconciler inventory stats``: read the inventory
as of the last plan or apply (they do not scan)."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from typing import Any

import click
from sqlalchemy import select, text

from reconciler.engine.listing import emit_listing
from reconciler.kinds.replicas import inventory
from reconciler.kinds.replicas.config import origins_of, replica_location
from reconciler.kinds.replicas.diff import replica_address
from reconciler.kinds.replicas.tables import OriginStatus, ReplicaStatus
from reconciler.units import human_bytes

STATUS = ReplicaStatus.__table__  # type: ignore[attr-defined]
ORIGIN_STATUS = OriginStatus.__table__  # type: ignore[attr-defined]


def _iso(value: Any) -> str | None:
    if isinstance(value, str):  # SQLite's text, from a query that is not typed
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return value.isoformat(timespec="seconds") if value is not None else None


def held_and_missing(connection: Any, key: str, origins: list[str], complete: Collection[str] = (),
                     held: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Files and bytes replica ``key`` holds, and those of its ``origins`` it lacks (absent, or of
    another size or time), as the inventory knows them: one query, and one join per origin not
    known ``complete`` (origins the caller knows lack nothing are not queried). ``held``: the files
    and bytes held, when the caller knows them current (not queried then)."""
    held_files, held_bytes = held if held is not None else connection.execute(
        text("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM replica_copies WHERE replica = :r"), {"r": key}
    ).one()
    missing_files = missing_bytes = 0
    for origin in origins:
        if origin in complete:
            continue
        missing = connection.execute(
            text("SELECT COUNT(*), COALESCE(SUM(f.size), 0) FROM origin_files f "
                 "LEFT JOIN replica_copies c ON c.file_id = f.id AND c.replica = :r "
                 "WHERE f.origin = :o AND f.gone_since IS NULL AND f.from_replica = :false "
                 "AND f.trimmed_at IS NULL "
                 "AND (c.file_id IS NULL OR c.size <> f.size OR c.mtime_ns <> f.mtime_ns)"),
            {"r": key, "o": origin, "false": False},
        ).one()
        missing_files += int(missing[0])
        missing_bytes += int(missing[1])
    return int(held_files), int(held_bytes), missing_files, missing_bytes


def replica_rows(app: Any) -> list[dict[str, Any]]:
    """Per configured replica: what it holds and misses, and when it was synced and verified."""
    return replica_rows_of(app.config.model, app.read_store, app.config.base_dir)


def replica_rows_of(desired: Any, store: Any, base_dir: Any) -> list[dict[str, Any]]:
    """``replica_rows`` from the config model, an open state store and the config's directory."""
    rows = []
    with store.engine.connect() as connection:
        for key, replica in desired.replicas.items():
            origins = origins_of(desired, replica)
            held_files, held_bytes, missing_files, missing_bytes = held_and_missing(connection, key, origins)
            status = connection.execute(
                select(STATUS.c.last_sync, STATUS.c.last_verify, STATUS.c.offline_since)
                .where(STATUS.c.replica == key)
            ).first()
            verified, corrupt = connection.execute(text(
                "SELECT COALESCE(SUM(CASE WHEN checked_at IS NOT NULL AND corrupt_since IS NULL "
                "THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN corrupt_since IS NOT NULL THEN 1 ELSE 0 END), 0) "
                "FROM replica_copies WHERE replica = :r"), {"r": key}).one()
            lost = sum(inventory.lost_files(connection, key, origin)[0] for origin in origins)
            rows.append({
                "address": replica_address(key),
                "url": str(replica_location(key, base_dir)),
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
    def lines_of(row: dict[str, Any]) -> list[str]:
        return [f"{row['address']}  ({row['url']})",
                f"  origins:  {', '.join(row['origins']) or '-'}",
                f"  holds:    {row['files']:,} files, {human_bytes(row['bytes'])}",
                f"  missing:  {row['missing_files']:,} files, {human_bytes(row['missing_bytes'])}",
                f"  synced:   {row['last_sync'] or 'never'}    verified: {row['last_verify'] or 'never'}",
                f"  content:  {row['verified']:,} verified, {row['unverified']:,} unverified, "
                f"{row['corrupt']:,} corrupt, {row['lost']:,} lost",
                *([f"  offline since {row['offline_since']} (removable; its root or marker is absent)"]
                  if row["offline_since"] else [])]

    emit_listing(replica_rows(app), as_json, lines_of)


@replicas_group.command("forget")
@click.argument("replica")
@click.option("--origin", help="Only the copies of this origin's files (default: everything of the replica).")
@click.option("--allow-destroy", is_flag=True,
              help="Really forget (destructive for the state); without it, print what would be forgotten and exit 2.")
@click.option("--lock-timeout", default="0s", show_default=True, help="How long to wait for another run's lock.")
@click.pass_obj
def forget_replica(app: Any, replica: str, origin: str | None, allow_destroy: bool, lock_timeout: str) -> None:
    """Drop the state's records of REPLICA (its key, or replica:KEY), retired or lost: its copies
    stop counting for trim's min_copies, for repairs and for "lost", and it stops warning as
    stale. Never touches a file, there or anywhere; only the state. Exit 2 without --allow-destroy."""
    from reconciler.errors import ConfigError
    from reconciler.state import lock
    from reconciler.units import parse_duration

    key = replica.removeprefix("replica:")
    try:
        timeout = parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise ConfigError(f"--lock-timeout: {error}") from None
    with lock.held(app.store, "forget", timeout), app.store.engine.begin() as connection:
        known = inventory.known_replicas(connection)
        if key not in known:
            raise ConfigError(f"the state records nothing of replica {key} "
                              f"(replicas it records: {', '.join(known) or 'none'})")
        found = inventory.forget_replica(connection, key, origin, apply=allow_destroy)
    scope = f" (origin {origin})" if origin else ""
    parts = [f"{found.copies:,} copies ({human_bytes(found.bytes)})"
             + (f" of {', '.join(found.origins)}" if found.origins else ""),
             f"{found.pairs} completeness record{'s' if found.pairs != 1 else ''}"]
    if found.status:
        parts.append(f"its status (marker id {found.marker_id or 'none'}, last sync, offline time)")
    verb = "Forgot" if allow_destroy else "Would forget"
    click.echo(f"{verb} {replica_address(key)}{scope}: {'; '.join(parts)}. No file was touched.")
    if found.only_copies:
        click.echo(f"Warning: {found.only_copies:,} files gone from, trimmed from or never seen on their origin "
                   f"had their only recorded copy there: the state {'now knows' if allow_destroy else 'would know'} "
                   "of no copy of them.", err=True)
    if key in app.config.model.replicas and allow_destroy:
        click.echo(f"Note: {key} is still in the config: " + (
            f"the next apply copies origin {origin}'s files to it again (rsync skips those already there)."
            if origin else "the next plan takes it for a new replica (remove it from the config if it is retired)."),
            err=True)
    if not allow_destroy:
        click.echo("Nothing was forgotten: forgetting is destructive for the state; run again with "
                   "--allow-destroy.", err=True)
        raise SystemExit(2)


@click.group("inventory")
def inventory_group() -> None:
    """The file inventory (as of the last plan or apply)."""


@inventory_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inventory_stats(app: Any, as_json: bool) -> None:
    """Per origin: files and bytes present, files gone, files known only from a replica, trimmed, last scan."""
    with app.read_store.engine.connect() as connection:
        scans = {origin: last_scan for origin, last_scan in
                 connection.execute(select(ORIGIN_STATUS.c.origin, ORIGIN_STATUS.c.last_scan))}
        result = connection.execute(text(
            "SELECT f.origin, "
            "SUM(CASE WHEN f.gone_since IS NULL AND f.from_replica = :false AND f.trimmed_at IS NULL "
            "THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.gone_since IS NULL AND f.from_replica = :false AND f.trimmed_at IS NULL "
            "THEN f.size ELSE 0 END), "
            "SUM(CASE WHEN f.gone_since IS NOT NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.from_replica = :true THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.trimmed_at IS NOT NULL AND f.gone_since IS NULL THEN 1 ELSE 0 END) "
            "FROM origin_files f GROUP BY f.origin ORDER BY f.origin"), {"false": False, "true": True})
        rows = [{"origin": origin, "files": int(files or 0), "bytes": int(size or 0), "gone": int(gone or 0),
                 "known_only_from_replica": int(enrolled or 0), "trimmed": int(trimmed or 0),
                 "last_scan": _iso(scans.get(origin))}
                for origin, files, size, gone, enrolled, trimmed in result]
    emit_listing(rows, as_json, lambda row: (
        f"{row['origin']}: {row['files']:,} files, {human_bytes(row['bytes'])}; {row['gone']:,} gone; "
        f"{row['known_only_from_replica']:,} known only from a replica; {row['trimmed']:,} trimmed; "
        f"last scan {row['last_scan'] or 'never'}"),
        empty="The inventory is empty: run `reconciler plan` to scan the origins.")


def _copy_state(checked_at: Any, corrupt_since: Any) -> str:
    if corrupt_since is not None:
        return f"corrupt since {_iso(corrupt_since)}"
    if checked_at is not None:
        return f"verified {_iso(checked_at)}"
    return "unverified"


@inventory_group.command("where")
@click.argument("path")
@click.option("--origin", help="Only this origin (default: every origin holding PATH).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inventory_where(app: Any, path: str, origin: str | None, as_json: bool) -> None:
    """Every copy of the file PATH (relative to its origin's root) and its state."""
    from reconciler.kinds.replicas import paths

    stored = paths.to_text(os.fsencode(path.strip("/")))
    with app.read_store.engine.connect() as connection:
        files = connection.execute(text(
            "SELECT id, origin, size, mtime_ns, sha256, gone_since, from_replica, trimmed_at FROM origin_files "
            "WHERE path = :p" + (" AND origin = :o" if origin else "") + " ORDER BY origin"),
            {"p": stored, "o": origin}).all()
        rows = []
        for file_id, name, size, _mtime_ns, digest, gone_since, from_replica, trimmed_at in files:
            copies = connection.execute(text(
                "SELECT replica, size, copied_at, sha256, checked_at, corrupt_since FROM replica_copies "
                "WHERE file_id = :f ORDER BY replica"), {"f": file_id}).all()
            on_origin = ("known only from a replica" if from_replica else
                         f"trimmed {_iso(trimmed_at)} (its copies were proven first)" if trimmed_at is not None else
                         f"gone since {_iso(gone_since)}" if gone_since is not None else "present")
            rows.append({
                "origin": name, "path": path, "size": int(size), "sha256": digest, "on_origin": on_origin,
                "copies": [{"replica": replica, "state": _copy_state(checked_at, corrupt_since),
                            "copied_at": _iso(copied_at), "sha256": copy_digest}
                           for replica, _, copied_at, copy_digest, checked_at, corrupt_since in copies],
            })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        raise click.ClickException(f"{path} is not in the inventory (paths are relative to an origin's root)")
    for row in rows:
        click.echo(f"{row['origin']}:{row['path']}  {human_bytes(row['size'])}, on the origin: {row['on_origin']}"
                   + (f", sha256 {row['sha256']}" if row["sha256"] else ""))
        if not row["copies"]:
            click.echo("  no copy on any replica")
        for copy in row["copies"]:
            click.echo(f"  {replica_address(copy['replica'])}: {copy['state']}")


@inventory_group.command("lost")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def inventory_lost(app: Any, as_json: bool) -> None:
    """Files with no good copy anywhere: gone from the origin and every copy corrupt. Exit 1 when any."""
    with app.read_store.engine.connect() as connection:
        rows = [{"origin": origin, "path": path} for origin, path in connection.execute(text(
            "SELECT f.origin, f.path FROM origin_files f "
            "WHERE (f.gone_since IS NOT NULL OR f.from_replica = :true OR f.trimmed_at IS NOT NULL) "
            "AND EXISTS (SELECT 1 FROM replica_copies c WHERE c.file_id = f.id AND c.corrupt_since IS NOT NULL) "
            "AND NOT EXISTS (SELECT 1 FROM replica_copies c WHERE c.file_id = f.id AND c.corrupt_since IS NULL) "
            "ORDER BY f.origin, f.path"), {"true": True})]
    emit_listing(rows, as_json, lambda row: f"{row['origin']}:{row['path']}", exit_code_when_rows=1,
                 empty="No file is lost: every file the inventory knows has a copy not found corrupt.")


@inventory_group.command("verify")
@click.option("--replica", "replica_key", help="Only this replica (its key in the config).")
@click.option("--budget", help='Most bytes to read, e.g. "50GiB" (default: the replica\'s scrub_budget, else all).')
@click.option("--lock-timeout", default="0s", show_default=True, help="How long to wait for another run's lock.")
@click.pass_obj
def inventory_verify(app: Any, replica_key: str | None, budget: str | None, lock_timeout: str) -> None:
    """Scrub now: re-read copies (those verified longest ago first) where they lie, compare their
    sha256 with the origin's, repair corrupt ones. Exit 1 when a copy could not be verified or repaired."""
    from pydantic import TypeAdapter

    from reconciler.errors import ConfigError, ReconcilerError
    from reconciler.state import lock
    from reconciler.units import Size, parse_duration

    desired = app.config.model
    if replica_key is not None and replica_key not in desired.replicas:
        raise ConfigError(f"--replica {replica_key}: no such replica in the config "
                          f"(replicas: {', '.join(desired.replicas) or 'none'})")
    try:
        limit = int(TypeAdapter(Size).validate_python(budget)) if budget is not None else None
        timeout = parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise ConfigError(f"--budget/--lock-timeout: {error}") from None
    kind = next(kind for kind in app.kinds if kind.name == "replicas")
    ctx = app.run_context()
    failed = 0
    with lock.held(app.store, "verify", timeout):
        for key, replica in desired.replicas.items():
            if replica_key is not None and key != replica_key:
                continue
            remaining = limit if limit is not None else (
                int(replica.scrub_budget) if replica.scrub_budget is not None else None)
            for origin in origins_of(desired, replica):
                if desired.origins[origin].checksum != "sha256":
                    click.echo(f"{replica_address(key)}: origin {origin} has checksum = \"none\": "
                               "its copies cannot be verified", err=True)
                    failed += 1
                    continue
                with app.store.engine.begin() as connection:
                    staged = inventory.stage_scrub(connection, key, origin, inventory.now_utc(), remaining)
                try:
                    if remaining is not None:
                        remaining = max(0, remaining - staged.bytes)
                    if not staged.copies:
                        continue
                    outcome = kind.scrub_copies(ctx, key, origin, inventory.staged_paths(app.store.engine,
                                                                                          staged.scan_id))
                    click.echo(f"{replica_address(key)} ({origin}): {outcome.text()}")
                    if outcome.failed:
                        click.echo(f"Error: {replica_address(key)}: {outcome.failed:,} copies are corrupt and could "
                                   f"not be repaired (e.g. {', '.join(outcome.failed_paths)}): no good copy to "
                                   "repair them from", err=True)
                        failed += 1
                except ReconcilerError as error:
                    click.echo(f"Error: {error}", err=True)
                    failed += 1
                finally:
                    with app.store.engine.begin() as connection:
                        inventory.drop_scan(connection, staged.scan_id)
    if failed:
        raise SystemExit(1)

"""``reconciler backups retention|list|verify|restore``."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from reconciler.errors import ApplyError, ConfigError, PlanError
from reconciler.kinds.backups.bsonio import BsonFormatError
from reconciler.kinds.backups.catalog import Backup, read_catalog
from reconciler.kinds.backups.connection import connect, redact
from reconciler.kinds.backups.retention import decide, parse_policy
from reconciler.kinds.backups.source import open_source, verify
from reconciler.units import human_bytes, parse_duration


@click.group("backups")
def backups_group() -> None:
    """MongoDB backups: try a retention policy, list, verify, restore."""


def _parse_time(text: str, line: int) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PlanError(f"line {line}: {text.strip()!r} is not an ISO-8601 time (e.g. 2026-11-21T10:00:00+01:00)") \
            from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@backups_group.command("retention")
@click.option("--policy", required=True, help='e.g. "keep_daily=7,keep_weekly=4,keep_within=2d"')
@click.option("--times", "times_file", type=click.File("r"), default="-", show_default=True,
              help="ISO-8601 times, one per line (offsets honoured; none means UTC).")
@click.option("--json", "as_json", is_flag=True)
def retention_command(policy: str, times_file: Any, as_json: bool) -> None:
    """Which of TIMES a POLICY keeps, by which rules, and which it removes (restic's forget rules)."""
    try:
        parsed = parse_policy(policy)
    except ValueError as error:
        raise ConfigError(f"--policy: {error}") from None
    texts = [(number, line) for number, line in enumerate(times_file, 1) if line.strip()]
    times = [_parse_time(text, number) for number, text in texts]
    decision = decide(times, parsed)
    if as_json:
        click.echo(json.dumps({
            "keep": [{"time": times[index].isoformat(), "reasons": reasons} for index, reasons in decision.keep],
            "remove": [{"time": times[index].isoformat()} for index in decision.remove],
        }, indent=2))
        return
    for index, reasons in decision.keep:
        click.echo(f"keep    {times[index].isoformat()}  {', '.join(reasons)}")
    for index in decision.remove:
        click.echo(f"remove  {times[index].isoformat()}")
    click.echo(f"{len(decision.keep)} kept, {len(decision.remove)} removed.", err=True)


def _configured(app: Any, only: str | None = None) -> list[tuple[str, Any]]:
    databases = [(key, db) for key, db in app.config.model.databases.items() if db.backup is not None]
    if only is not None:
        databases = [(key, db) for key, db in databases if key == only]
        if not databases:
            known = ", ".join(key for key, _ in _configured(app)) or "none"
            raise ConfigError(f"no [databases.{only}] with a backup section in the config (configured: {known})")
    return databases


def _catalog(key: str, db: Any) -> list[Backup]:
    try:
        return read_catalog(Path(db.backup.to), key).backups
    except FileNotFoundError:
        raise ConfigError(f"[databases.{key}.backup] to = {db.backup.to}: no such directory") from None


@backups_group.command("list")
@click.argument("database", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_command(app: Any, database: str | None, as_json: bool) -> None:
    """Backups per database: time, age, size, documents, and the retention rules keeping each."""
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    for key, db in _configured(app, database):
        backups = _catalog(key, db)
        decision = decide([b.time for b in backups], db.backup.retention.policy())
        reasons = {index: why for index, why in decision.keep}
        for index, backup in enumerate(backups):
            rows.append({
                "database": key, "id": backup.backup_id, "time": backup.time.isoformat(),
                "age_seconds": int((now - backup.time).total_seconds()), "bytes": backup.manifest.bytes,
                "documents": backup.manifest.documents, "kept_by": reasons.get(index, []),
                "path": str(backup.data_path),
            })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        age = row["age_seconds"]
        age_text = f"{age // 86400}d{age % 86400 // 3600}h" if age >= 86400 else f"{age // 3600}h{age % 3600 // 60}m"
        kept = ", ".join(row["kept_by"]) or "not kept: pruned on the next apply --allow-destroy"
        click.echo(f"{row['id']}  {row['time']}  {age_text:>8}  {human_bytes(row['bytes']):>10}  "
                   f"{row['documents']:>10,} docs  {kept}")
    if not rows:
        click.echo("No backups yet.", err=True)


def _find(app: Any, identifier: str) -> Path:
    """A backup ID from the configured destinations, or a path."""
    if os.path.exists(identifier):
        return Path(identifier)
    try:
        databases = _configured(app)
    except ConfigError:
        databases = []
    for key, db in databases:
        for backup in _catalog(key, db):
            if backup.backup_id == identifier:
                return backup.data_path
    raise ConfigError(f"{identifier!r} is neither a backup id in the configured destinations nor a path; "
                      "see `reconciler backups list`")


@backups_group.command("verify")
@click.argument("backup", required=False)
@click.pass_obj
def verify_command(app: Any, backup: str | None) -> int:
    """Re-read backups (all, or one ID or PATH): checksums, BSON framing, archive CRCs, counts."""
    targets = [_find(app, backup)] if backup else [b.data_path for key, db in _configured(app)
                                                        for b in _catalog(key, db)]
    failed = 0
    for path in targets:
        try:
            problems = verify(open_source(path))
        except BsonFormatError as error:
            problems = [str(error)]
        if problems:
            failed += 1
            click.echo(f"DAMAGED {path}")
            for problem in problems:
                click.echo(f"  {problem}")
        else:
            click.echo(f"ok      {path}")
    if failed:
        click.echo(f"{failed} of {len(targets)} backup(s) failed verification.", err=True)
        return 1
    return 0


@backups_group.command("restore")
@click.argument("backup")
@click.option("--uri", help="Target server (prefer --uri-env: a password here shows in your shell history).")
@click.option("--uri-env", help="Environment variable holding the target connection string.")
@click.option("--database", help="Target database (default: the one the backup was taken from).")
@click.option("--map", "mappings", multiple=True, metavar="OLD=NEW", help="Restore collection OLD as NEW.")
@click.option("--force-rollback", is_flag=True,
              help="Restore a CryoSPARC database even though project directories are newer than the backup.")
@click.option("--lock-timeout", default="0s", show_default=True, metavar="DURATION",
              help="How long to wait for a running apply/reconcile (its lock) before failing, e.g. 5m.")
@click.pass_obj
def restore_command(app: Any, backup: str, uri: str | None, uri_env: str | None, database: str | None,
                    mappings: tuple[str, ...], force_rollback: bool, lock_timeout: str) -> None:
    """Restore a backup (ID, or PATH to any archive or dump folder from reconciler, mongodump or
    jobflow-remote) into empty collections; on failure nothing is left behind. Holds the state
    database's lock (never beside an apply or reconcile) when there is a config."""
    from reconciler.kinds.backups.restore import restore
    from reconciler.state import lock

    timeout = _seconds(lock_timeout)

    if (uri is None) == (uri_env is None):
        raise ConfigError("give the target as exactly one of --uri and --uri-env")
    target = uri if uri is not None else os.environ.get(uri_env or "")
    if not target:
        raise ConfigError(f"${uri_env} is not set")
    mapping = {}
    for item in mappings:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--map {item!r}: write OLD=NEW")
        mapping[old] = new
    path = _find(app, backup)
    try:
        source = open_source(path, database)
    except BsonFormatError as error:
        raise ApplyError(f"cannot restore: {error}") from None
    # A restore from a path needs no config; without one there is no state database to lock.
    with lock.held(app.store, "backups restore", timeout) if app.config_path.exists() else nullcontext():
        _rollback_guard(source, force_rollback)
        client = connect(target)
        try:
            report = restore(source, client, database, mapping, app.progress)
        finally:
            client.close()
    for name, count in report.collections.items():
        indexes = report.indexes.get(name) or []
        click.echo(f"restored {report.database}.{name}: {count:,} documents"
                   + (f", indexes {', '.join(indexes)}" if indexes else ""))
    for skipped in report.skipped:
        click.echo(f"skipped {skipped} (no collection metadata for it in the backup)", err=True)
    click.echo(f"Restored {sum(report.collections.values()):,} documents into {redact(target)} "
               f"database {report.database}.", err=True)





def _seconds(lock_timeout: str) -> float:
    try:
        return parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lock-timeout") from None


def _rollback_guard(source: Any, force: bool) -> None:
    """Refuse to restore an instance's database over newer project directories (see projects/guard.py)."""
    from reconciler.kinds.projects.guard import backup_time, newer_projects, refusal

    try:
        taken = backup_time(source)
        found = newer_projects(source, taken)
    except BsonFormatError as error:
        raise ApplyError(f"cannot restore: {error}") from None
    if not found:
        return
    if not force:
        raise ApplyError(refusal(found, taken))
    click.echo(f"warning: --force-rollback: restoring over newer project directories: "
               f"{', '.join(item.uid for item in found)}", err=True)

"""``reconciler backups retention|list|verify|restore``."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler.engine.listing import emit_listing
from reconciler.errors import ApplyError, ConfigError, PlanError, StateError
from reconciler.kinds.backups.bsonio import BsonFormatError
from reconciler.kinds.backups.catalog import Catalog, read_catalog
from reconciler.kinds.backups.retention import decide, parse_policy, policy_of
from reconciler.kinds.backups.source import READ_ERRORS, describe, open_source, verify
from reconciler.providers.mongo.connection import connect, describe_server_error, redact
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
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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


def _catalog(key: str, db: Any) -> Catalog:
    try:
        return read_catalog(Path(db.backup.to), key)
    except FileNotFoundError:
        raise ConfigError(f"[databases.{key}.backup] to = {db.backup.to}: no such directory") from None


@backups_group.command("list")
@click.argument("database", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_command(app: Any, database: str | None, as_json: bool) -> None:
    """Backups per database: time, age, size, documents, and the retention rules keeping each."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []  # a backup whose manifest cannot be read is an error, never left out quietly
    for key, db in _configured(app, database):
        catalog = _catalog(key, db)
        unreadable.extend(catalog.unreadable)
        backups = catalog.backups
        decision = decide([b.time for b in backups], policy_of(db.backup.retention))
        reasons = {index: why for index, why in decision.keep}
        for index, backup in enumerate(backups):
            rows.append({
                "database": key, "id": backup.backup_id, "time": backup.time.isoformat(),
                "age_seconds": int((now - backup.time).total_seconds()), "bytes": backup.manifest.bytes,
                "documents": backup.manifest.documents, "kept_by": reasons.get(index, []),
                "path": str(backup.data_path),
            })
    def line(row: dict[str, Any]) -> str:
        age = row["age_seconds"]
        age_text = f"{age // 86400}d{age % 86400 // 3600}h" if age >= 86400 else f"{age // 3600}h{age % 3600 // 60}m"
        kept = ", ".join(row["kept_by"]) or "not kept: pruned on the next apply --allow-destroy"
        return (f"{row['id']}  {row['time']}  {age_text:>8}  {human_bytes(row['bytes']):>10}  "
                f"{row['documents']:>10,} docs  {kept}")

    if not rows and not unreadable and not as_json:
        click.echo("No backups yet.", err=True)
    emit_listing(rows, as_json, line, problems=unreadable)


def _find(app: Any, identifier: str) -> Path:
    """A backup ID from the configured destinations, or a path."""
    if os.path.exists(identifier):
        return Path(identifier)
    try:
        databases = _configured(app)
    except ConfigError:
        databases = []
    for key, db in databases:
        for backup in _catalog(key, db).backups:
            if backup.backup_id == identifier:
                return backup.data_path
    raise ConfigError(f"{identifier!r} is neither a backup id in the configured destinations nor a path; "
                      "see `reconciler backups list`")


@backups_group.command("verify")
@click.argument("backup", required=False)
@click.pass_obj
def verify_command(app: Any, backup: str | None) -> int:
    """Re-read backups (all, or one ID or PATH): checksums, BSON framing, archive CRCs, counts."""
    unreadable: list[str] = []  # backups whose manifest cannot be read cannot be verified: never "all ok"
    if backup:
        targets = [_find(app, backup)]
    else:
        catalogs = [_catalog(key, db) for key, db in _configured(app)]
        targets = [b.data_path for catalog in catalogs for b in catalog.backups]
        unreadable = [problem for catalog in catalogs for problem in catalog.unreadable]
    for problem in unreadable:
        manifest, _, why = problem.partition(": unreadable manifest")
        click.echo(f"DAMAGED {manifest}")
        click.echo(f"  unreadable manifest{why}")
    failed = len(unreadable)
    for path in targets:
        try:
            problems = verify(open_source(path))
        except READ_ERRORS as error:  # a damaged backup is a DAMAGED line; the others are still verified
            problems = [describe(error)]
        if problems:
            failed += 1
            click.echo(f"DAMAGED {path}")
            for problem in problems:
                click.echo(f"  {problem}")
        else:
            click.echo(f"ok      {path}")
    if failed:
        click.echo(f"{failed} of {len(targets) + len(unreadable)} backup(s) failed verification.", err=True)
        return 1
    return 0


@backups_group.command("restore")
@click.argument("backup")
@click.option("--uri", help="Target server (prefer --uri-env: a password here shows in your shell history).")
@click.option("--uri-env", help="Environment variable holding the target connection string.")
@click.option("--ns-include", "includes", multiple=True, metavar="PATTERN",
              help="Restore only namespaces matching PATTERN (DB.COLLECTION, * wildcards), as mongorestore.")
@click.option("--ns-exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out namespaces matching PATTERN.")
@click.option("--ns-from", "ns_from", multiple=True, metavar="PATTERN",
              help="Rename namespaces matching PATTERN to the --ns-to of the same position (* wildcards).")
@click.option("--ns-to", "ns_to", multiple=True, metavar="PATTERN")
@click.option("--database", help="Shorthand: the backup's one database restored as DATABASE.")
@click.option("--map", "mappings", multiple=True, metavar="OLD=NEW", help="Shorthand: restore collection OLD as NEW.")
@click.option("--oplog-replay/--no-oplog-replay", default=None,
              help="Replay the backup's oplog (default: when it is a consistent backup).")
@click.option("--users-and-roles", is_flag=True,
              help="Also restore admin.system.users and admin.system.roles (merged; existing ones are kept).")
@click.option("--resume-cleanup", is_flag=True,
              help="Drop the collections a killed restore to this server created (named by its checkpoint), "
                   "then restore.")
@click.option("--force-rollback", is_flag=True,
              help="Restore a CryoSPARC database even though project directories are newer than the backup.")
@click.option("--lock-timeout", default="0s", show_default=True, metavar="DURATION",
              help="How long to wait for a running apply/reconcile (its lock) before failing, e.g. 5m.")
@click.pass_obj
def restore_command(app: Any, backup: str, uri: str | None, uri_env: str | None, includes: tuple[str, ...],
                    excludes: tuple[str, ...], ns_from: tuple[str, ...], ns_to: tuple[str, ...],
                    database: str | None, mappings: tuple[str, ...], oplog_replay: bool | None,
                    users_and_roles: bool, resume_cleanup: bool, force_rollback: bool, lock_timeout: str) -> None:
    """Restore a backup (ID, or PATH to any archive or dump folder from reconciler, mongodump or
    jobflow-remote) as mongorestore does: every namespace into the database it came from (unless
    renamed), only into empty collections; on failure nothing is left behind. Holds the state
    database's lock (never beside an apply or reconcile) when there is a config."""
    from reconciler.kinds.backups.names import Rename
    from reconciler.kinds.backups.restore import RestoreOptions
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
    if len(ns_from) != len(ns_to):
        raise ConfigError("give --ns-from and --ns-to in pairs (the same number of each)")
    options = RestoreOptions(include=list(includes), exclude=list(excludes),
                             renames=[Rename(a, b) for a, b in zip(ns_from, ns_to, strict=True)], database=database,
                             mapping=mapping, oplog_replay=oplog_replay, users_and_roles=users_and_roles)
    path = _find(app, backup)
    try:
        source = open_source(path, database)
    except READ_ERRORS as error:
        raise ApplyError(f"cannot restore: {describe(error)}") from None
    try:
        store = app.store
    except (ConfigError, StateError) as error:  # restoring a path needs no config; then no lock, no checkpoint
        store = None
        click.echo(f"warning: no state database ({error}); a killed restore could not be resumed", err=True)
    server = redact(target)
    with lock.held(store, "backups restore", timeout) if store is not None else nullcontext():
        report = _restore_under_lock(source, options, target, uri_env, store, str(path), resume_cleanup,
                                     force_rollback, app.progress)
    for name, (kind, count) in report.namespaces.items():
        indexes = report.indexes.get(name) or []
        what = {"view": "view", "timeseries": f"time-series, {count:,} buckets", "users": f"{count:,} users merged",
                "roles": f"{count:,} roles merged"}.get(kind, f"{count:,} documents")
        click.echo(f"restored {name}: {what}" + (f", indexes {', '.join(indexes)}" if indexes else ""))
    if report.oplog_applied is not None:
        click.echo(f"replayed {report.oplog_applied:,} oplog entries")
    for namespace, why in report.skipped:
        click.echo(f"skipped {namespace} ({why})", err=True)
    databases = report.databases
    click.echo(f"Restored {report.documents:,} documents into {server} "
               f"database{'s' if len(databases) != 1 else ''} {', '.join(databases) or '(none)'}.", err=True)


class RestoreCheckpointRecorder:
    """The restore checkpoint in the state store (see tables.RestoreCheckpoint)."""

    def __init__(self, store: Any, server: str, backup: str):
        self.store = store
        self.server = server
        self.backup = backup
        self.started = datetime.now(UTC)

    @property
    def _table(self) -> Any:
        from reconciler.kinds.backups.tables import RestoreCheckpoint

        return RestoreCheckpoint.__table__  # type: ignore[attr-defined]

    def leftovers(self) -> dict[str, bool]:
        """Namespaces a killed restore half-wrote -> whether it created them."""
        from sqlalchemy import select

        table = self._table
        with self.store.engine.begin() as connection:
            rows = connection.execute(select(table.c.namespace, table.c.created).where(table.c.server == self.server))
            return {row[0]: bool(row[1]) for row in sorted(rows)}

    def _record(self, namespace: str, created: bool) -> None:
        from sqlalchemy import insert

        with self.store.engine.begin() as connection:
            connection.execute(insert(self._table).values(server=self.server, namespace=namespace,
                                                          backup=self.backup, started_at=self.started,
                                                          created=created))

    def created(self, namespace: str) -> None:
        self._record(namespace, True)

    def filled(self, namespace: str) -> None:
        self._record(namespace, False)

    def clear(self) -> None:
        from sqlalchemy import delete

        with self.store.engine.begin() as connection:
            connection.execute(delete(self._table).where(self._table.c.server == self.server))

    done = clear


def _restore_under_lock(source: Any, options: Any, target: str, uri_env: str | None, store: Any, path: str,
                        resume_cleanup: bool, force_rollback: bool, progress: Any) -> Any:
    """The restore itself, with the rollback guard and the checkpoint of a killed restore
    (cleaned up first with ``resume_cleanup``). Returns the restore's report. Raises ApplyError."""
    from reconciler.kinds.backups.restore import restore

    _rollback_guard(source, force_rollback)
    client = connect(target, user_hint=uri_env)
    server = redact(target)
    try:
        checkpoint = RestoreCheckpointRecorder(store, server, path) if store is not None else None
        leftovers = checkpoint.leftovers() if checkpoint is not None else {}
        if leftovers:
            if not resume_cleanup:
                raise ApplyError(f"a restore to {server} was interrupted and left these collections half-restored: "
                                 f"{', '.join(leftovers)}; run again with --resume-cleanup to drop exactly "
                                 "those and restore")
            _drop_leftovers(client, leftovers)
            assert checkpoint is not None
            checkpoint.clear()
            click.echo(f"dropped {len(leftovers)} half-restored collection(s) of the interrupted restore: "
                       f"{', '.join(leftovers)}", err=True)
        return restore(source, client, options, progress, checkpoint)
    except Exception as error:
        from pymongo.errors import PyMongoError

        if isinstance(error, PyMongoError):
            raise ApplyError(describe_server_error(error, target, uri_env)) from None
        raise
    finally:
        client.close()


def _seconds(lock_timeout: str) -> float:
    try:
        return parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lock-timeout") from None


def _drop_leftovers(client: Any, namespaces: dict[str, bool]) -> None:
    """Drop what the killed restore created; empty again what existed empty before it."""
    for namespace, created in namespaces.items():
        db, _, collection = namespace.partition(".")
        if created:
            client[db].drop_collection(collection)
        else:
            client[db][collection].delete_many({})


def _rollback_guard(source: Any, force: bool) -> None:
    """Refuse to restore an instance's database over newer project directories (see projects/guard.py)."""
    from reconciler.kinds.backups.guard import backup_time, newer_projects, refusal

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

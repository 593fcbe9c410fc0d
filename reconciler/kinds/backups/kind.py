"""The backups resource kind: MongoDB databases backed up on a schedule, pruned by retention.

Observe: each database's destination (its manifests are the truth; the state
caches them) and whether the server answers. Diff (diff.py, pure): backup,
prune, cleanup. Apply: dump (python or mongodump), remove pruned backups
(manifest first, so a half-removed backup is a leftover, not a broken backup),
remove leftovers.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, RunContext, executor
from reconciler.engine.memo import Memo
from reconciler.engine.planner import matches_target
from reconciler.errors import ApplyError, ObserveError
from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, TEMP_PREFIX, backup_id_for, read_catalog
from reconciler.kinds.backups.diff import (
    BackupFact,
    CleanupDetails,
    DatabaseFacts,
    PruneDetails,
    database_address,
    diff_database,
)
from reconciler.kinds.backups.retention import policy_of
from reconciler.kinds.backups.tables import BackupRecord, RestoreCheckpoint
from reconciler.providers.mongo.config import DATABASES_SECTION
from reconciler.providers.mongo.connection import connect, describe_server_error, redact
from reconciler.secrets import has_password


def policy_text(retention: Any) -> str:
    """``keep_daily=7, keep_within=2d`` (durations serialise as they are written)."""
    parts = [f"{name}={value}" for name, value in retention.model_dump(exclude_none=True).items()]
    return ", ".join(parts) or "keep everything"


class BackupsKind(Kind):
    name = "backups"
    address_prefix = "database"
    sections = {
        **DATABASES_SECTION,
    }
    tables = [BackupRecord, RestoreCheckpoint]

    def addresses(self, desired: Any) -> list[str]:
        return [database_address(key) for key, db in desired.databases.items() if db.backup is not None]

    def check(self, desired: Any, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        problems: list[tuple[ConfigPath, str]] = []
        for key, db in desired.databases.items():
            if db.uri and has_password(db.uri):
                problems.append((("databases", key, "uri"),
                                 f"[databases.{key}] uri holds a password: keep it out of the config, "
                                 "put the connection string in an environment variable and name it with uri_env"))
        return problems

    def observe(self, desired: Any, ctx: RunContext) -> Observation:
        now = datetime.now(UTC)
        facts: list[DatabaseFacts] = []
        errors: list[AddressMessage] = []
        for key, db in desired.databases.items():
            backup = db.backup
            address = database_address(key)
            if backup is None or (ctx.targets and not matches_target(address, ctx.targets)):
                continue
            destination = Path(backup.to)
            fact = DatabaseFacts(
                key=key, database=db.database, destination=str(destination), every=backup.every,
                policy=policy_of(backup.retention), policy_text=policy_text(backup.retention), format=backup.format,
                method=backup.method, compress=backup.compress, collections=list(db.collections), now=now)
            try:
                catalog = read_catalog(destination, key)
            except FileNotFoundError:
                errors.append(AddressMessage(address=address, message=(
                    f"{destination} does not exist; create or mount it (reconciler never creates a backup "
                    "destination, so a missing mount is not filled by mistake)")))
                continue
            except OSError as error:
                errors.append(AddressMessage(address=address, message=f"{destination}: {error.strerror}"))
                continue
            for problem in catalog.unreadable:
                errors.append(AddressMessage(address=address, message=problem))
            fact.backups = [BackupFact(b.backup_id, b.time, str(b.data_path), str(b.manifest_path),
                                       b.manifest.bytes, b.manifest.documents) for b in catalog.backups]
            fact.leftovers = [str(path) for path in catalog.leftovers]
            try:
                uri = db.resolve_uri()
                client = connect(uri, db.connect_timeout.total_seconds())
                try:
                    if backup.consistent == "oplog" and not _is_replica_set(client, uri):
                        errors.append(AddressMessage(address=address, message=(
                            f'[databases.{key}.backup] consistent = "oplog" needs a replica set, and '
                            f"{redact(uri)} is a standalone server (it keeps no oplog); remove the option "
                            "or run the server as a replica set")))
                finally:
                    client.close()
            except (ValueError, ObserveError) as error:
                fact.reachable = False
                errors.append(AddressMessage(address=address, message=str(error)))
            self._cache(ctx, key, catalog.backups)
            facts.append(fact)
        # Nothing declared, nothing observed: nothing a no-change memo would need to check.
        return Observation(facts=facts, errors=errors, memo=None if facts or errors else Memo())

    @staticmethod
    def _cache(ctx: RunContext, key: str, backups: list[Any]) -> None:
        table = BackupRecord.__table__  # type: ignore[attr-defined]
        with ctx.state.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.database_key == key))
            if backups:
                connection.execute(insert(table), [
                    {"database_key": key, "backup_id": b.backup_id, "time": b.time, "path": str(b.data_path),
                     "bytes": b.manifest.bytes, "documents": b.manifest.documents} for b in backups])

    def diff(self, desired: Any, observation: Observation) -> Diff:
        combined = Diff()
        for fact in observation.facts or []:
            combined.extend(diff_database(fact))
        return combined

    @executor("backup")
    def backup(self, action: Action, ctx: RunContext) -> str:
        from reconciler.kinds.backups.dump import DumpRequest, data_name, dump_mongodump, dump_python

        key = action.address.split(":", 1)[1]
        db = ctx.desired.databases.get(key)
        if db is None or db.backup is None:
            raise ApplyError(f"{action.address} is no longer in the config; run plan again")
        try:
            uri = db.resolve_uri()
        except ValueError as error:
            raise ApplyError(str(error)) from None
        started = datetime.now(UTC)
        request = DumpRequest(database_key=key, database=db.database, collections=list(db.collections),
                              destination=Path(db.backup.to), format=db.backup.format,
                              compress=db.backup.compress, backup_id=backup_id_for(key, started),
                              consistent=db.backup.consistent)
        while (request.destination / data_name(request)).exists():
            request.backup_id += "-1"
        client = connect(uri, db.connect_timeout.total_seconds())
        try:
            mongodump = shutil.which("mongodump")
            method = db.backup.method
            if method == "mongodump" and not mongodump:
                raise ApplyError("method = \"mongodump\" but mongodump is not on PATH; install the MongoDB "
                                 "database tools or use method = \"python\"")
            if db.backup.consistent and method == "mongodump":
                raise ApplyError('consistent = "oplog" needs method = "python" (mongodump --oplog dumps whole '
                                 "servers only)")
            if (method == "mongodump" or (method == "auto" and mongodump)) and not db.backup.consistent:
                manifest = dump_mongodump(mongodump or "mongodump", uri, client, request)
            else:
                manifest = dump_python(client, request)
        finally:
            client.close()
        return (f"{manifest.backup_id}: {manifest.summary()}, {manifest.bytes:,} bytes "
                f"({manifest.method}, {manifest.format})")

    @executor("prune")
    def prune(self, action: Action, ctx: RunContext) -> str:
        details = PruneDetails.of(action)
        manifest, data = Path(details.manifest), Path(details.path)
        if not manifest.name.endswith(MANIFEST_SUFFIX) or data.parent != manifest.parent:
            raise ApplyError(f"{action.address}: the plan's paths do not look like a backup; run plan again")
        manifest.unlink(missing_ok=True)  # from here on it is a leftover, not a backup
        _remove(data)
        return f"removed {details.backup_id}"

    @executor("cleanup")
    def cleanup(self, action: Action, ctx: RunContext) -> str:
        details = CleanupDetails.of(action)
        destination = Path(details.destination)
        prefix = action.address.split(":", 1)[1] + "-"
        removed = 0
        for text in details.files:
            path = Path(text)
            ours = path.name.startswith(prefix) or path.name.startswith(TEMP_PREFIX + prefix)
            if not ours or path.parent != destination or (path.parent / (path.name + MANIFEST_SUFFIX)).exists():
                continue  # not this database's leftover, or it became a complete backup meanwhile
            _remove(path)
            removed += 1
        return f"removed {removed} leftover(s)"

    def commands(self) -> list[Any]:
        from reconciler.kinds.backups.commands import backups_group

        return [backups_group]


def _is_replica_set(client: Any, uri: str) -> bool:
    """Whether the server keeps an oplog. Raises ObserveError (one line) when it does not answer."""
    from pymongo.errors import PyMongoError

    try:
        return bool(client.admin.command("hello").get("setName"))
    except PyMongoError as error:
        raise ObserveError(describe_server_error(error, uri)) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.unlink(path)


"""Restoring a backup with mongorestore's semantics.

Every namespace goes back into the database it came from, unless renamed
(``--ns-from``/``--ns-to``, or the shorthands ``--database`` and ``--map``) or
left out (``--ns-include``/``--ns-exclude``). Server-internal namespaces
(``admin.system.*``, ``config.*``, ``local.*``, ``system.views``) are reported as
skipped, never restored. Only empty targets are restored into. Collections are
created with their options (capped, validators, collations, time-series), views
from their definitions, indexes from the metadata, documents in bounded batches;
top-level ``Timestamp(0, 0)`` fields are set back after the insert (the server
fills them with the current time), as mongorestore does. A consistent backup's
oplog is replayed last. On failure the namespaces it created are dropped again.

``plan_restore`` is pure (no I/O); ``restore`` does the writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from bson.raw_bson import RawBSONDocument

from reconciler.errors import ApplyError
from reconciler.kinds.backups.bsonio import element_document, top_level_elements, zero_timestamps
from reconciler.kinds.backups.names import BUCKETS_PREFIX, Rename, check_rename, pattern_regex, server_internal
from reconciler.kinds.backups.source import BackupSource, SourceCollection, verify
from reconciler.providers.mongo.connection import describe_server_error, server_hosts

BATCH_DOCUMENTS = 1000
BATCH_BYTES = 8 * 1024 * 1024
INDEX_FIELDS_DROPPED = ("ns", "v")


@dataclass
class RestoreOptions:
    include: list[str] = field(default_factory=list)  # --ns-include patterns (none: everything)
    exclude: list[str] = field(default_factory=list)  # --ns-exclude patterns
    renames: list[Rename] = field(default_factory=list)  # --ns-from/--ns-to pairs
    database: str | None = None  # --database: every namespace of the (single-database) backup into it
    mapping: dict[str, str] = field(default_factory=dict)  # --map OLD=NEW collection renames
    oplog_replay: bool | None = None  # None: replay when the backup is a consistent one
    users_and_roles: bool = False  # restore admin.system.users/roles (merged, as mongorestore does)


AUTHZ = {"system.users": "tempusers", "system.roles": "temproles"}  # mongorestore's temporary collections


@dataclass
class Target:
    source: SourceCollection
    db: str
    collection: str
    authz: bool = False  # users or roles: inserted into a temporary collection, then merged

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def type(self) -> str:
        return self.source.type

    @property
    def data_collection(self) -> str | None:
        if self.type == "view":
            return None
        return f"{BUCKETS_PREFIX}{self.collection}" if self.type == "timeseries" else self.collection


@dataclass
class RestorePlan:
    targets: list[Target]
    skipped: list[tuple[str, str]]  # (namespace, why)
    oplog: bool  # replay the backup's oplog

    def target_of(self, db: str, data_collection: str) -> Target | None:
        for target in self.targets:
            if target.source.db == db and target.source.data_collection == data_collection:
                return target
        return None


def plan_restore(source: BackupSource, options: RestoreOptions) -> RestorePlan:
    """Which namespace of the backup goes where, and which are left out and why (pure).

    Raises ApplyError for options that name nothing in the backup or send two
    namespaces to one target.
    """
    namespaces = [item for item in source.collections if item.type != "oplog"]
    databases = sorted({item.db for item in namespaces if server_internal(item.db, item.collection) is None})
    renames = list(options.renames)
    for rename in renames:
        problem = check_rename(rename.source, rename.target)
        if problem:
            raise ApplyError(problem)
    if options.database:
        if len(databases) > 1:
            raise ApplyError(f"{source.path} holds several databases ({', '.join(databases)}); --database renames "
                             "one: restore them into their own databases (no --database), pick one with "
                             "--ns-include 'DB.*', or rename with --ns-from 'DB.*' --ns-to 'NEW.*'")
        if databases:
            renames.append(Rename(f"{_escape(databases[0])}.*", f"{_escape(options.database)}.*"))
    unknown = sorted(set(options.mapping) - {item.collection for item in namespaces})
    if unknown:
        raise ApplyError(f"--map names collections the backup does not hold: {', '.join(unknown)}")
    includes = [pattern_regex(pattern) for pattern in options.include]
    excludes = [pattern_regex(pattern) for pattern in options.exclude]
    owners = {(item.db, item.collection) for item in namespaces if item.type == "timeseries"}
    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    for item in namespaces:
        namespace = item.namespace
        if item.db == "admin" and item.collection in AUTHZ and options.users_and_roles:
            if renames or options.mapping:
                raise ApplyError("--users-and-roles restores users and roles as they were; it cannot be combined "
                                 "with renames (--ns-from/--ns-to, --database, --map)")
            targets.append(Target(item, "admin", AUTHZ[item.collection], authz=True))
            continue
        why = server_internal(item.db, item.collection)
        if why is None and item.collection.startswith(BUCKETS_PREFIX) \
                and (item.db, item.collection[len(BUCKETS_PREFIX):]) not in owners:
            why = "time-series buckets without their collection's metadata in the backup"
        if why is None and includes and not any(regex.match(namespace) for regex in includes):
            why = "not matched by --ns-include"
        if why is None and any(regex.match(namespace) for regex in excludes):
            why = "matched by --ns-exclude"
        if why is not None:
            skipped.append((namespace, why))
            continue
        renamed = namespace
        for rename in renames:
            result = rename.apply(namespace)
            if result is not None:
                renamed = result
                break
        db, _, collection = renamed.partition(".")
        collection = options.mapping.get(item.collection, collection)
        targets.append(Target(item, db, collection))
    seen: dict[str, int] = {}
    for target in targets:
        seen[target.namespace] = seen.get(target.namespace, 0) + 1
    doubled = sorted(name for name, count in seen.items() if count > 1)
    if doubled:
        names = ", ".join(name.partition(".")[2] if options.mapping else name for name in doubled)
        what = "--map sends" if options.mapping else "the renames send"
        raise ApplyError(f"{what} several collections into {names}; give each its own name")
    has_oplog = any(item.type == "oplog" for item in source.collections)
    consistent = bool(source.manifest and source.manifest.consistent)
    replay = has_oplog and (options.oplog_replay if options.oplog_replay is not None else consistent)
    if options.oplog_replay and not has_oplog:
        raise ApplyError(f"--oplog-replay: {source.path} holds no oplog")
    if has_oplog and not replay:
        skipped.append((".oplog", "not replayed (--oplog-replay replays it)"))
    return RestorePlan(targets, skipped, replay)


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("*", "\\*")


@dataclass
class RestoreReport:
    namespaces: dict[str, tuple[str, int]] = field(default_factory=dict)  # target -> (type, documents)
    indexes: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    oplog_applied: int | None = None

    @property
    def documents(self) -> int:
        return sum(count for _kind, count in self.namespaces.values())

    @property
    def databases(self) -> list[str]:
        return sorted({name.partition(".")[0] for name in self.namespaces})


def refuse_non_empty(client: Any, targets: list[Target]) -> None:
    """Raises ApplyError naming every target namespace that exists with documents (or is a view)."""
    busy = []
    by_db: dict[str, list[Target]] = {}
    for target in targets:
        by_db.setdefault(target.db, []).append(target)
    for db_name, items in sorted(by_db.items()):
        db = client[db_name]
        existing = {info["name"]: info.get("type", "collection") for info in db.list_collections()}
        for target in sorted(items, key=lambda item: item.collection):  # listCollections' order is not stable
            kind = existing.get(target.collection)
            if kind is None:
                continue
            if kind == "view":
                busy.append(f"{target.namespace} (a view already exists)")
                continue
            if kind != target.type:
                busy.append(f"{target.namespace} (exists as a {kind}, the backup holds a {target.type})")
                continue
            count = db[target.collection].count_documents({}, limit=1_000_000_000)
            if count:
                busy.append(f"{target.namespace} ({count:,} documents)")
    if busy:
        databases = sorted(by_db)
        where = databases[0] if len(databases) == 1 else ", ".join(databases)
        raise ApplyError(f"refusing to restore into {where}: these collections are not empty: "
                         f"{', '.join(_short(b, databases) for b in busy)}; restore only goes into empty "
                         "collections (drop them, or restore with --database NEW)")


def _short(text: str, databases: list[str]) -> str:
    """``jobs (50 documents)`` when there is one target database, else the full namespace."""
    return text.split(".", 1)[1] if len(databases) == 1 else text


def restore(source: BackupSource, client: Any, options: RestoreOptions,
            progress: Callable[[str, int, int], None] | None = None,
            checkpoint: Any = None) -> RestoreReport:
    """Restore ``source`` as ``options`` say.

    ``checkpoint``: an object with ``created(namespace)`` called before each namespace is
    created, ``filled(namespace)`` before an existing empty collection is filled, and
    ``done()`` at the end (the state store's restore checkpoint); None: none kept.

    Raises ApplyError (nothing left behind) when the backup is damaged, a target is not
    empty, or the server fails mid-way.
    """
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    problems = verify(source)
    if problems:
        raise ApplyError(f"refusing to restore the damaged backup {source.path}: " + "; ".join(problems[:5]))
    plan = plan_restore(source, options)
    report = RestoreReport(skipped=list(plan.skipped))
    if not plan.targets:
        return report
    touched: list[tuple[str, str]] = []  # (db, collection) created by this restore
    try:
        refuse_non_empty(client, plan.targets)
        _create(client, plan, report, touched, checkpoint)
        _insert(source, client, plan, report, progress)
        _merge_users_and_roles(client, plan, report)
        if plan.oplog:
            report.oplog_applied = _replay(source, client, plan)
        if checkpoint is not None:
            checkpoint.done()
        return report
    except PyMongoError as error:
        _drop(client, touched)
        if checkpoint is not None:
            checkpoint.done()
        where = ", ".join(sorted({target.db for target in plan.targets}))
        raise ApplyError(f"restore into {where} failed and was rolled back: "
                         f"{describe_server_error(error, server_hosts(client))}") from None
    except ApplyError:
        _drop(client, touched)
        if checkpoint is not None:
            checkpoint.done()
        raise


def _create(client: Any, plan: RestorePlan, report: RestoreReport, touched: list[tuple[str, str]],
            checkpoint: Any) -> None:
    """Collections, time-series collections and system.js first, then views (a view's source
    collection may come later in the backup), each with its options and indexes."""
    existing: dict[str, set[str]] = {}
    renamed = {(t.source.db, t.source.collection): t.collection for t in plan.targets}
    ordered = [t for t in plan.targets if t.type != "view"] + [t for t in plan.targets if t.type == "view"]
    for target in ordered:
        db = client[target.db]
        if target.db not in existing:
            existing[target.db] = set(db.list_collection_names())
        options = dict(target.source.metadata.get("options", {}))
        if target.type == "view":
            view_on = str(options.get("viewOn"))
            options["viewOn"] = renamed.get((target.source.db, view_on), view_on)
        if target.collection not in existing[target.db]:
            if checkpoint is not None:
                checkpoint.created(target.namespace)
            touched.append((target.db, target.collection))
            if target.type == "timeseries":
                touched.append((target.db, f"{BUCKETS_PREFIX}{target.collection}"))
            db.command({"create": target.collection, **options})
        elif target.data_collection is not None:
            # an existing empty collection: emptied again on failure, never dropped (not ours)
            if checkpoint is not None:
                checkpoint.filled(target.namespace)
            touched.append((target.db, EMPTY_AGAIN + target.data_collection))
        report.namespaces[target.namespace] = (target.type, 0)
        indexes = []
        for index in target.source.metadata.get("indexes", []):
            spec = {key: value for key, value in dict(index).items() if key not in INDEX_FIELDS_DROPPED}
            if spec.get("name") != "_id_":
                indexes.append(spec)
        if indexes and target.type != "view" and not target.authz:
            db.command({"createIndexes": target.collection, "indexes": indexes})
        report.indexes[target.namespace] = [spec["name"] for spec in indexes]


def _insert(source: BackupSource, client: Any, plan: RestorePlan, report: RestoreReport,
            progress: Callable[[str, int, int], None] | None) -> None:
    from pymongo import UpdateOne

    total = source.manifest.documents if source.manifest else 0
    buffers: dict[str, list[RawBSONDocument]] = {}
    sizes: dict[str, int] = {}
    routes: dict[tuple[str, str], Target | None] = {}
    done = 0
    pause = _test_pause()

    def flush(target: Target) -> None:
        nonlocal done
        batch = buffers.pop(target.namespace, [])
        sizes.pop(target.namespace, None)
        if not batch:
            return
        collection = client[target.db][target.data_collection]
        collection.insert_many(batch, ordered=True, bypass_document_validation=True)
        fixes = []
        for document in batch:
            raw = cast(bytes, document.raw)  # the buffer it was read into (not copied)
            names = zero_timestamps(raw)
            if names:
                fixes.append(UpdateOne(_id_filter(raw), {"$set": {name: _ZERO for name in names}}))
        if fixes:  # the server replaced them with the insert time; mongorestore sets them back the same way
            collection.bulk_write(fixes, ordered=True, bypass_document_validation=True)
        kind, count = report.namespaces[target.namespace]
        report.namespaces[target.namespace] = (kind, count + len(batch))
        done += len(batch)
        if progress:
            progress("restore", done, max(total, done))
        if pause is not None:
            pause(done)

    for db, collection, document in source.documents(validate=False):
        if not db:
            continue  # the oplog: replayed after the documents
        key = (db, collection)
        if key not in routes:
            routes[key] = plan.target_of(db, collection)
        target = routes[key]
        if target is None:
            continue  # a skipped namespace (listed in the plan)
        buffers.setdefault(target.namespace, []).append(RawBSONDocument(document))
        sizes[target.namespace] = sizes.get(target.namespace, 0) + len(document)
        if len(buffers[target.namespace]) >= BATCH_DOCUMENTS or sizes[target.namespace] >= BATCH_BYTES:
            flush(target)
    for target in plan.targets:
        flush(target)


def _merge_users_and_roles(client: Any, plan: RestorePlan, report: RestoreReport) -> None:
    """Users and roles go through temporary collections and the server's _mergeAuthzCollections
    (as mongorestore does; existing users and roles are kept, not replaced)."""
    authz = [target for target in plan.targets if target.authz]
    if not authz:
        return
    try:
        client.admin.command({"_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers",
                              "tempRolesCollection": "admin.temproles", "drop": False, "db": ""})
    finally:
        for target in authz:
            client.admin.drop_collection(target.collection)
    for target in authz:
        _kind, count = report.namespaces.pop(target.namespace)
        report.indexes.pop(target.namespace, None)
        report.namespaces[target.source.namespace] = (target.source.collection.split(".")[1], count)


def _replay(source: BackupSource, client: Any, plan: RestorePlan) -> int:
    from reconciler.kinds.backups.oplog import replay

    targets = {(t.source.db, t.source.data_collection): t for t in plan.targets if t.source.data_collection}

    def rename(namespace: str) -> str | None:
        db, _, collection = namespace.partition(".")
        target = targets.get((db, collection))
        return f"{target.db}.{target.data_collection}" if target is not None else None

    entries = [document for db, _collection, document in source.documents(validate=False) if not db]
    return replay(client, entries, rename)


def _id_filter(raw: bytes) -> RawBSONDocument:
    for _kind, name, start, end in top_level_elements(raw):
        if name == "_id":
            return RawBSONDocument(element_document(raw, start, end))
    raise ApplyError("a document with a Timestamp(0, 0) field has no _id; it cannot be restored exactly")


def _zero() -> Any:
    from bson.timestamp import Timestamp

    return Timestamp(0, 0)


_ZERO = _zero()


def _test_pause() -> Callable[[int], None] | None:
    """TEST-ONLY hook: with RECONCILER_TEST_RESTORE_PAUSE_AFTER=N set, the restore prints
    ``paused after N documents`` on stderr and sleeps once N documents are in, so a test can
    kill it at a known point. Never set it outside tests."""
    import os

    value = os.environ.get("RECONCILER_TEST_RESTORE_PAUSE_AFTER")
    if not value:
        return None
    limit = int(value)

    def pause(done: int) -> None:
        import sys
        import time

        if done >= limit:
            print(f"paused after {done} documents", file=sys.stderr, flush=True)
            time.sleep(3600)

    return pause


EMPTY_AGAIN = "\0empty:"  # marks a touched collection that existed (empty) before the restore


def _drop(client: Any, names: list[tuple[str, str]]) -> None:
    """Undo: drop what the restore created, empty again the empty collections it filled."""
    from pymongo.errors import PyMongoError

    for db, name in reversed(names):
        try:
            if name.startswith(EMPTY_AGAIN):
                client[db][name[len(EMPTY_AGAIN):]].delete_many({})
            else:
                client[db].drop_collection(name)
        except PyMongoError:
            pass

"""Restoring a backup: only into empty collections, indexes from the metadata, documents
in bounded batches, and on failure the collections it filled are dropped again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument

from reconciler.errors import ApplyError
from reconciler.kinds.backups.connection import redact
from reconciler.kinds.backups.source import BackupSource, verify

BATCH_DOCUMENTS = 1000
BATCH_BYTES = 8 * 1024 * 1024
INDEX_FIELDS_DROPPED = ("ns", "v")


@dataclass
class RestoreReport:
    database: str
    collections: dict[str, int] = field(default_factory=dict)  # target collection -> documents
    indexes: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def target_names(source: BackupSource, mapping: dict[str, str]) -> dict[str, str]:
    """Source collection -> target collection, from ``--map old=new`` (else the same name)."""
    unknown = sorted(set(mapping) - {item.collection for item in source.collections})
    if unknown:
        raise ApplyError(f"--map names collections the backup does not hold: {', '.join(unknown)}")
    names = {item.collection: mapping.get(item.collection, item.collection) for item in source.collections
             if item.has_data}
    targets = list(names.values())
    doubled = sorted({name for name in targets if targets.count(name) > 1})
    if doubled:
        raise ApplyError(f"--map sends several collections into {', '.join(doubled)}; give each its own name")
    return names


def refuse_non_empty(db: Any, targets: list[str]) -> None:
    """Raises ApplyError naming every target collection that holds documents, with its count."""
    existing = set(db.list_collection_names())
    busy = []
    for name in sorted(targets):  # listCollections' order is not stable on a real server
        if name in existing:
            count = db[name].count_documents({}, limit=1_000_000_000)
            if count:
                busy.append(f"{name} ({count:,} documents)")
    if busy:
        raise ApplyError(f"refusing to restore into {db.name}: these collections are not empty: {', '.join(busy)}; "
                         "restore only goes into empty collections (drop them, or restore with --database NEW)")


def restore(source: BackupSource, client: Any, database: str | None, mapping: dict[str, str],
            progress: Callable[[str, int, int], None] | None = None) -> RestoreReport:
    """Restore ``source`` into ``database`` (default: the database it was dumped from).

    Raises ApplyError (nothing left behind) when the backup is damaged, a target
    collection is not empty, or the server fails mid-way.
    """
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    problems = verify(source)
    if problems:
        raise ApplyError(f"refusing to restore the damaged backup {source.path}: " + "; ".join(problems[:5]))
    names = target_names(source, mapping)
    source_dbs = {item.db for item in source.collections}
    chosen = database or (source_dbs.pop() if len(source_dbs) == 1 else None)
    if chosen is None:
        raise ApplyError(f"{source.path} holds several databases ({', '.join(sorted({i.db for i in source.collections}))}); "
                         "name the one to restore into with --database")
    target_db: str = chosen
    db = client[target_db]
    report = RestoreReport(database=target_db)
    touched: list[str] = []
    try:
        refuse_non_empty(db, list(names.values()))
        existing = set(db.list_collection_names())
        for item in source.collections:
            if item.collection not in names:
                continue
            target = names[item.collection]
            if target not in existing:
                options = dict(item.metadata.get("options", {}))
                db.command({"create": target, **options})
            touched.append(target)
            report.collections[target] = 0
            indexes = []
            for index in item.metadata.get("indexes", []):
                spec = {key: value for key, value in dict(index).items() if key not in INDEX_FIELDS_DROPPED}
                if spec.get("name") != "_id_":
                    indexes.append(spec)
            if indexes:
                db.command({"createIndexes": target, "indexes": indexes})
            report.indexes[target] = [spec["name"] for spec in indexes]
        total = sum(stats.documents for stats in source.manifest.collections.values()) if source.manifest else 0
        buffers: dict[str, list[RawBSONDocument]] = {}
        sizes: dict[str, int] = {}
        done = 0

        def flush(target: str) -> None:
            nonlocal done
            batch = buffers.pop(target, [])
            sizes.pop(target, None)
            if batch:
                db[target].insert_many(batch, ordered=True, bypass_document_validation=True)
                report.collections[target] += len(batch)
                done += len(batch)
                if progress:
                    progress(f"restore into {target_db}", done, max(total, done))

        for source_db, collection, document in source.documents(validate=False):
            name = names.get(collection)
            if name is None:
                if f"{source_db}.{collection}" not in report.skipped:
                    report.skipped.append(f"{source_db}.{collection}")
                continue
            buffers.setdefault(name, []).append(RawBSONDocument(document))
            sizes[name] = sizes.get(name, 0) + len(document)
            if len(buffers[name]) >= BATCH_DOCUMENTS or sizes[name] >= BATCH_BYTES:
                flush(name)
        for target in list(buffers):
            flush(target)
        return report
    except PyMongoError as error:
        _drop(db, touched)
        raise ApplyError(f"restore into {target_db} failed and was rolled back: {redact(str(error).splitlines()[0])}") \
            from None
    except BaseException:
        _drop(db, touched)
        raise


def _drop(db: Any, names: list[str]) -> None:
    from pymongo.errors import PyMongoError

    for name in names:
        try:
            db.drop_collection(name)
        except PyMongoError:
            pass

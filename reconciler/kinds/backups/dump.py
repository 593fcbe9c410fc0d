"""Making a backup: the python method (pymongo, raw BSON, bounded memory) or mongodump.

Every backup is written under a temporary name (``.tmp-<id>…``) and renamed into
place only when complete; its manifest is written last. A backup without a
manifest is a leftover, never a backup.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util

from reconciler import __version__
from reconciler.errors import ApplyError
from reconciler.fsutil import HashingWriter, atomic_write_text, fsync_directory, sha256_file
from reconciler.kinds.backups.archive import ArchiveWriter, CollectionMeta
from reconciler.kinds.backups.bsonio import count_documents
from reconciler.kinds.backups.catalog import MANIFEST_SUFFIX, TEMP_PREFIX, CollectionStats, Manifest, ManifestFile
from reconciler.kinds.backups.dumpdir import WrittenFile, metadata_text, write_collection, write_oplog
from reconciler.kinds.backups.names import BUCKETS_PREFIX, server_internal
from reconciler.kinds.backups.oplog import OplogWindow
from reconciler.kinds.backups.source import open_source
from reconciler.providers.mongo.connection import describe_server_error, redact, server_hosts, server_version

BATCH = 1000


@dataclass
class DumpRequest:
    database_key: str
    database: str
    collections: list[str]  # ["*"] or names
    destination: Path
    format: str  # archive | directory
    compress: bool
    backup_id: str
    consistent: str | None = None  # "oplog": capture the oplog entries of the dump window (replica sets)
    # Called with each collection's name before its documents are read (tests use it to write
    # between two collection reads, deterministically).
    before_collection: Callable[[str], None] | None = None


@dataclass
class CollectionPlan:
    name: str
    metadata: dict[str, Any]
    kind: str = "collection"  # collection | timeseries | view
    stats: CollectionStats = field(default_factory=lambda: CollectionStats(documents=0, bytes=0))

    @property
    def has_data(self) -> bool:
        return self.kind != "view"

    @property
    def data_collection(self) -> str | None:
        """Where the documents are: the collection, a time-series collection's buckets, none for a view."""
        if self.kind == "view":
            return None
        return f"{BUCKETS_PREFIX}{self.name}" if self.kind == "timeseries" else self.name


def data_name(request: DumpRequest) -> str:
    if request.format == "archive":
        return f"{request.backup_id}.archive" + (".gz" if request.compress else "")
    return request.backup_id


KINDS = ("collection", "timeseries", "view")


def collection_plans(db: Any, wanted: list[str]) -> tuple[list[CollectionPlan], dict[str, str]]:
    """The collections to dump with their metadata (options, indexes, uuid, type), as mongodump
    records them, and the namespaces left out with the reason (server-internal ones only:
    ``system.views`` is in the views' metadata, ``system.buckets.*`` is dumped as its
    time-series collection's data).

    Raises ApplyError naming a collection of a kind that cannot be dumped faithfully.
    """
    plans = []
    skipped: dict[str, str] = {}
    everything = "*" in wanted
    infos = list(db.list_collections())
    series = {info["name"] for info in infos if info.get("type") == "timeseries"}
    for info in infos:
        name = info["name"]
        if not everything and name not in wanted:
            continue
        if name.startswith(BUCKETS_PREFIX) and name[len(BUCKETS_PREFIX):] in series:
            continue  # dumped as its time-series collection's data
        why = server_internal(db.name, name)
        if why is not None:
            if name != "system.views" or not everything:
                skipped[name] = why
            continue
        kind = info.get("type", "collection")
        if kind not in KINDS:
            raise ApplyError(f"{db.name}.{name} is a {kind!r} collection, which reconciler cannot back up "
                             "faithfully; leave it out with collections = [...] in the config")
        metadata: dict[str, Any] = {"options": dict(info.get("options", {}))}
        metadata["indexes"] = [dict(index) for index in db[name].list_indexes()] if kind != "view" else []
        uuid = (info.get("info") or {}).get("uuid")
        if uuid is not None and hasattr(uuid, "hex"):
            metadata["uuid"] = uuid.hex if isinstance(uuid.hex, str) else uuid.hex()
        metadata["collectionName"] = name
        metadata["type"] = kind
        plans.append(CollectionPlan(name, metadata, kind))
    missing = [] if everything else sorted(set(wanted) - {plan.name for plan in plans} - set(skipped))
    if missing:
        raise ApplyError(f"database {db.name} has no collection {', '.join(missing)}")
    return plans, skipped


def _documents(db: Any, plan: CollectionPlan, hook: Callable[[str], None] | None = None) -> Iterator[bytes]:
    """The collection's documents, as the server's raw reply batches (whole documents back to
    back, never decoded: no Python object per document); counts go into ``plan.stats`` at the end."""
    if hook is not None:
        hook(plan.name)
    collection = db.get_collection(plan.data_collection)
    count = size = 0
    try:
        for batch in _prefetched(collection.find_raw_batches({}, batch_size=BATCH)):
            count += count_documents(batch)
            size += len(batch)
            yield batch
    finally:
        plan.stats = CollectionStats(documents=count, bytes=size, type=plan.kind)


_END = object()


def _prefetched(batches: Any, depth: int = 4) -> Iterator[bytes]:
    """The cursor's batches, fetched by a thread while the caller writes and hashes the previous
    ones (network waits, file writes and sha256 release the GIL, so they overlap). At most
    ``depth`` batches wait in memory. An error of the cursor is raised here, in the caller."""
    import queue
    import threading

    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            ready.put(error)

    thread = threading.Thread(target=fetch, name="reconciler-dump-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
        batches.close()


def _measurements(db: Any, plan: CollectionPlan) -> None:
    from pymongo.errors import PyMongoError

    try:
        plan.stats.measurements = db[plan.name].count_documents({})
    except PyMongoError:
        plan.stats.measurements = None


def _files_of(root: Path, base: Path) -> list[ManifestFile]:
    if root.is_file():
        return [ManifestFile(path=root.name, bytes=root.stat().st_size, sha256=sha256_file(root))]
    found = []
    for directory, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = Path(directory) / name
            relative = str(path.relative_to(base))
            found.append(ManifestFile(path=relative, bytes=path.stat().st_size, sha256=sha256_file(path)))
    return found


def _fsync_tree(root: Path) -> None:
    paths = [root] if root.is_file() else [Path(d) / n for d, _, names in os.walk(root) for n in names]
    for path in paths:
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())


def _finish(request: DumpRequest, temporary: Path, collections: list[CollectionPlan], method: str, server: str,
            started: datetime, written: list[WrittenFile] | None = None, skipped: dict[str, str] | None = None,
            oplog_entries: int | None = None) -> Manifest:
    """Rename into place, then write the manifest: the backup exists from that moment.

    ``written``: files already fsynced and hashed while they were written (paths
    relative to the dump root; "" for an archive). Otherwise (mongodump's output)
    the files are fsynced and hashed here.
    """
    if written is None:
        _fsync_tree(temporary)
    final = request.destination / data_name(request)
    os.replace(temporary, final)
    fsync_directory(request.destination)
    if written is None:
        files = _files_of(final, request.destination)
    else:
        files = [ManifestFile(path=f"{final.name}/{item.path}" if item.path else final.name, bytes=item.bytes,
                              sha256=item.sha256) for item in written]
    manifest = Manifest(
        backup_id=request.backup_id, database_key=request.database_key, database=request.database,
        format=request.format, compressed=request.compress, method=method,
        collections={plan.name: plan.stats for plan in collections}, skipped=skipped or {},
        consistent=request.consistent, oplog_entries=oplog_entries, files=files, server_version=server,
        tool_version=f"reconciler {__version__}", started_at=started, finished_at=datetime.now(UTC),
    )
    atomic_write_text(request.destination / (final.name + MANIFEST_SUFFIX), manifest.to_json())
    return manifest


def dump_python(client: Any, request: DumpRequest) -> Manifest:
    """Dump with pymongo: each collection streamed as raw BSON (no decode, no re-encode).

    Raises ApplyError (the URI never in it) when the server fails mid-way; the
    temporary output is removed.
    """
    from pymongo.errors import PyMongoError  # here, not at import: pymongo is slow to load
    started = datetime.now(UTC)
    db = client[request.database]
    temporary = request.destination / (TEMP_PREFIX + data_name(request))
    try:
        if request.database not in client.list_database_names():
            raise ApplyError(f"database {request.database} does not exist on {server_hosts(client)}; "
                             "check [databases.*] database in the config")
        window = OplogWindow.open(client, request.database) if request.consistent == "oplog" else None
        collections, skipped = collection_plans(db, request.collections)
        version = server_version(client)
        written: list[WrittenFile] = []
        hook = request.before_collection
        oplog_entries: int | None = None
        if request.format == "archive":
            raw_stream = HashingWriter(temporary)
            stream: Any = gzip.GzipFile(fileobj=raw_stream, mode="wb", mtime=0) if request.compress else raw_stream
            writer = ArchiveWriter(stream, server_version=version, tool_version=f"reconciler {__version__}")
            metas = [CollectionMeta(request.database, plan.name, metadata_text(plan.metadata), type=plan.kind)
                     for plan in collections]
            if window is not None:
                metas.append(CollectionMeta("", "oplog", "", type="collection"))
            writer.begin(metas)
            for plan in collections:
                if plan.data_collection is None:  # a view: an EOF block of its own, as mongodump writes
                    writer.write_collection(request.database, plan.name, [])
                    plan.stats = CollectionStats(documents=0, bytes=0, type=plan.kind)
                    continue
                writer.write_collection(request.database, plan.data_collection, _documents(db, plan, hook),
                                        chunks=True)
                if plan.kind == "timeseries":
                    _measurements(db, plan)
            if window is not None:
                oplog_entries, _crc = writer.write_collection("", "oplog", window.entries())
            if stream is not raw_stream:
                stream.close()
            size, digest = raw_stream.close()
            written.append(WrittenFile("", size, digest))
        else:
            temporary.mkdir()
            for plan in collections:
                if plan.kind == "timeseries":
                    _count, files = write_collection(temporary, request.database, plan.name, plan.metadata, None,
                                                     request.compress)
                    written.extend(files)
                    _count, files = write_collection(temporary, request.database, plan.data_collection or "",
                                                     None, _documents(db, plan, hook), request.compress, chunks=True)
                    _measurements(db, plan)
                else:
                    _count, files = write_collection(temporary, request.database, plan.name, plan.metadata,
                                                     _documents(db, plan, hook) if plan.has_data else None,
                                                     request.compress, chunks=True)
                    if not plan.has_data:
                        plan.stats = CollectionStats(documents=0, bytes=0, type=plan.kind)
                written.extend(files)
            if window is not None:
                oplog_entries, files = write_oplog(temporary, window.entries(), request.compress)
                written.extend(files)
        return _finish(request, temporary, collections, "python", version, started, written, skipped, oplog_entries)
    except PyMongoError as error:
        raise ApplyError(f"dumping {request.database} failed: "
                         f"{describe_server_error(error, server_hosts(client))}") from None
    except OSError as error:
        raise ApplyError(f"writing {temporary} failed: {error.strerror or error}") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary) if temporary.is_dir() else temporary.unlink()


def mongodump_argv(config_file: str, request: DumpRequest, output: Path) -> list[str]:
    """mongodump's arguments; the URI (and any password) is in ``config_file``, never on the command line."""
    argv = ["--config", config_file, "--db", request.database]
    if "*" not in request.collections and len(request.collections) == 1:
        argv += ["--collection", request.collections[0]]
    if request.format == "archive":
        argv.append(f"--archive={output}")
    else:
        argv += ["--out", str(output)]
    if request.compress:
        argv.append("--gzip")
    return argv


_DONE = re.compile(r"done dumping (\S+) \((\d+) documents?\)")


def parse_mongodump_counts(stderr: str) -> dict[str, int]:
    """``{namespace: documents}`` from mongodump's log lines."""
    return {namespace: int(count) for namespace, count in _DONE.findall(stderr)}


def dump_mongodump(mongodump: str, uri: str, client: Any, request: DumpRequest) -> Manifest:
    """Dump with the mongodump program, then read its output back for the manifest.

    Raises ApplyError with mongodump's last line (redacted) when it fails.
    """
    started = datetime.now(UTC)
    temporary = request.destination / (TEMP_PREFIX + data_name(request))
    handle, config_file = tempfile.mkstemp(prefix="reconciler-mongodump-", suffix=".yaml")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(f"uri: {json_util.dumps(uri)}\n")
        os.chmod(config_file, 0o600)
        if "*" not in request.collections and len(request.collections) > 1:
            raise ApplyError("the mongodump method dumps one collection or all; use method = \"python\" for a list")
        import sh  # only the mongodump method runs a program: the python method never loads sh

        try:
            result = sh.Command(mongodump)(*mongodump_argv(config_file, request, temporary), _return_cmd=True)
            stderr = result.stderr.decode("utf-8", "replace")
        except sh.ErrorReturnCode as error:
            lines = error.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ApplyError(f"mongodump failed with exit {error.exit_code}: {redact(lines[-1] if lines else '')}") \
                from None
        counts = parse_mongodump_counts(stderr)
        collections = _collections_from_output(temporary)
        for plan in collections:
            namespace = f"{request.database}.{plan.data_collection or plan.name}"
            plan.stats.documents = counts.get(namespace, plan.stats.documents)
        return _finish(request, temporary, collections, "mongodump", server_version(client), started)
    finally:
        os.unlink(config_file)
        if temporary.exists():
            shutil.rmtree(temporary) if temporary.is_dir() else temporary.unlink()


def _collections_from_output(output: Path) -> list[CollectionPlan]:
    """Collections, metadata and counts of mongodump's output, read back the way any backup is read."""
    source = open_source(output)
    plans = {item.collection: CollectionPlan(item.collection, item.metadata, item.type)
             for item in source.collections if item.db}
    owners = {item.data_collection: item.collection for item in source.collections if item.data_collection}
    counts: dict[str, list[int]] = {}
    for db, name, document in source.documents(validate=False):
        if not db:
            continue  # the oplog
        count = counts.setdefault(owners.get(name, name), [0, 0])
        count[0] += 1
        count[1] += len(document)
    for plan in plans.values():
        plan.stats = CollectionStats(documents=0, bytes=0, type=plan.kind)
    for name, (documents, size) in counts.items():
        plan = plans.setdefault(name, CollectionPlan(name, {}))
        plan.stats = CollectionStats(documents=documents, bytes=size, type=plan.kind)
    return list(plans.values())

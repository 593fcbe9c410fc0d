"""The inventory in SQL: every bulk operation is a few set-based statements over a
scratch table of listed entries, never one ORM object per file."""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection

from reconciler.kinds.replicas import paths
from reconciler.kinds.replicas.listing import Entry, KnownDir
from reconciler.kinds.replicas.tables import (
    OriginStatus,
    PairStatus,
    ReplicaCopy,
    ReplicaStatus,
    ScanEntry,
    ScannedDir,
)

CHUNK = 20_000
SCAN_TABLE = ScanEntry.__table__  # type: ignore[attr-defined]


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite may hand back naive ones)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def new_scan_id() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:12]


def sweep_old_scans(connection: Connection, older_than: timedelta = timedelta(days=1)) -> None:
    """Drop scratch rows left by runs killed mid-scan (scan ids start with their UTC time)."""
    cutoff = (now_utc() - older_than).strftime("%Y%m%dT%H%M%S")
    connection.execute(delete(SCAN_TABLE).where(SCAN_TABLE.c.scan_id < cutoff))


def drop_scan(connection: Connection, scan_id: str) -> None:
    connection.execute(delete(SCAN_TABLE).where(SCAN_TABLE.c.scan_id == scan_id))


@dataclass
class Loaded:
    files: int = 0
    bytes: int = 0


SCAN_COLUMNS = "scan_id, entry_type, path, dir, size, mtime_ns"


def bulk_insert_scan(connection: Connection, rows: Iterable[tuple[str, str, str, str, int, int]]) -> None:
    """Insert scratch rows as fast as the driver allows: COPY on PostgreSQL, a plain
    executemany of tuples on SQLite (per-row ORM or Core overhead is what makes 1M rows slow)."""
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(f"COPY scan_entries ({SCAN_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    cursor = raw.cursor()  # type: ignore[union-attr]
    batch: list[tuple[str, str, str, str, int, int]] = []
    statement = f"INSERT INTO scan_entries ({SCAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    for row in rows:
        batch.append(row)
        if len(batch) >= CHUNK:
            cursor.executemany(statement, batch)
            batch = []
    if batch:
        cursor.executemany(statement, batch)
    cursor.close()


def load_entries(connection: Connection, scan_id: str, entries: Iterable[Entry],
                 dirs: list[Entry] | None = None) -> Loaded:
    """Stream a listing into the scratch table; directories are also kept in ``dirs``."""
    loaded = Loaded()
    to_text = paths.to_text

    def rows() -> Iterator[tuple[str, str, str, str, int, int]]:
        for entry in entries:
            if entry.entry_type == "f":
                loaded.files += 1
                loaded.bytes += entry.size
                parent = to_text(entry.path.rpartition(b"/")[0])
            else:
                parent = ""
                if dirs is not None:
                    dirs.append(entry)
            yield (scan_id, entry.entry_type, to_text(entry.path), parent, entry.size, entry.mtime_ns)

    bulk_insert_scan(connection, rows())
    return loaded


def load_paths(connection: Connection, scan_id: str, rows: Iterable[tuple[str, int, int]],
               with_dirs: bool = True) -> None:
    """Put (path, size, mtime_ns) rows, already in stored text form, into the scratch table;
    ``with_dirs=False`` leaves their directory empty (for uses that never read it)."""
    parent_of = paths.parent_of if with_dirs else lambda path: ""
    bulk_insert_scan(connection, ((scan_id, "f", path, parent_of(path), size, mtime_ns)
                                  for path, size, mtime_ns in rows))


def known_dirs(connection: Connection, origin: str) -> dict[bytes, KnownDir]:
    """Directories of an origin at its last listing, by relative path."""
    table = ScannedDir.__table__  # type: ignore[attr-defined]
    rows = connection.execute(
        select(table.c.path, table.c.mtime_ns, table.c.settled, table.c.digest).where(table.c.origin == origin))
    return {paths.to_bytes(path): KnownDir(mtime_ns, bool(settled), digest)
            for path, mtime_ns, settled, digest in rows}


def add_directory_digests(connection: Connection) -> None:
    """Schema 1 -> 2: scanned directories gain the digest of their files (NULL until next listed)."""
    connection.execute(text("ALTER TABLE scanned_dirs ADD COLUMN digest VARCHAR"))


def add_integrity_columns(connection: Connection) -> None:
    """Schema 2 -> 3: content checksums, the replica marker and offline time (all NULL at first).
    Columns already there (a state whose tables were made by a newer reconciler) are kept."""
    _add_columns(connection, [
        ("origin_files", "sha256", "VARCHAR"),
        ("origin_files", "trimmed_at", "TIMESTAMP"),
        ("replica_copies", "sha256", "VARCHAR"),
        ("replica_copies", "checked_at", "TIMESTAMP"),
        ("replica_copies", "corrupt_since", "TIMESTAMP"),
        ("replica_status", "marker_id", "VARCHAR"),
        ("replica_status", "offline_since", "TIMESTAMP"),
    ])
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_replica_copies_replica_checked "
                            "ON replica_copies (replica, checked_at)"))


def add_device_column(connection: Connection) -> None:
    """Schema 3 -> 4: the device identity of a replica's root beside its marker id (NULL until
    the next run records it). A column already there is kept."""
    _add_columns(connection, [("replica_status", "device", "VARCHAR")])


def add_totals_columns(connection: Connection) -> None:
    """Schema 4 -> 5: the counted totals the report's history reuses while nothing changed (an
    origin's live files and bytes at an inventory generation, a replica's held files and bytes at
    a copies generation), all NULL (not counted) at first. Columns already there are kept."""
    _add_columns(connection, [
        ("origin_status", "live_files", "BIGINT"),
        ("origin_status", "live_bytes", "BIGINT"),
        ("origin_status", "counted_generation", "INTEGER"),
        ("replica_status", "copies_generation", "INTEGER NOT NULL DEFAULT 0"),
        ("replica_status", "held_files", "BIGINT"),
        ("replica_status", "held_bytes", "BIGINT"),
        ("replica_status", "held_generation", "INTEGER"),
    ])


def _add_columns(connection: Connection, columns: list[tuple[str, str, str]]) -> None:
    """A schema upgrade's new (table, column, SQL type) columns, each added unless there already
    (a state whose tables a newer reconciler made)."""
    from sqlalchemy import inspect

    inspector = inspect(connection)
    for table, column, kind in columns:
        if column not in {found["name"] for found in inspector.get_columns(table)}:
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


def bump_copies(connection: Connection, replica: str, create: bool = True) -> None:
    """Every write that adds, drops or resizes copy records of ``replica`` calls this in its own
    transaction: the held totals counted before (report.measure) are no longer current. In one
    statement, like the origin's generation (a status row made meanwhile by another run is
    bumped, not overwritten); ``create`` False leaves a replica without a status row without one
    (it has no counted totals to outdate)."""
    if not create:
        connection.execute(text("UPDATE replica_status SET copies_generation = copies_generation + 1 "
                                "WHERE replica = :replica"), {"replica": replica})
        return
    connection.execute(text(
        "INSERT INTO replica_status (replica, copies_generation) VALUES (:replica, 1) "
        "ON CONFLICT (replica) DO UPDATE SET copies_generation = replica_status.copies_generation + 1"),
        {"replica": replica})


def origin_status(connection: Connection, origin: str) -> OriginStatus:
    table = OriginStatus.__table__  # type: ignore[attr-defined]
    row = connection.execute(select(table).where(table.c.origin == origin)).mappings().first()
    return OriginStatus(**row) if row else OriginStatus(origin=origin)


def put_row(connection: Connection, table: Any, keys: dict[str, Any], values: dict[str, Any]) -> None:
    """Set one row's ``values``: insert the row with these ``keys``, or update it when it exists,
    in one statement (``ON CONFLICT``): runs on several hosts writing the same row at once
    never fail on the key nor lose either write."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    statement = upsert(table).values(**keys, **values)
    if values:
        connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=values))
    else:
        connection.execute(statement.on_conflict_do_nothing(index_elements=list(keys)))


def fold_alone(connection: Connection, origin: str) -> None:
    """On PostgreSQL, wait until no other transaction folds a listing of ``origin`` (two hosts
    may read one origin: its own host directly, another over ssh), and keep it so until this
    transaction ends: folds of one origin never interleave."""
    if connection.dialect.name == "postgresql":
        from reconciler.state.guards import advisory_key

        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(f"fold:{origin}")})


def apply_origin_scan(connection: Connection, origin: str, scan_id: str, dirs: list[Entry], full: bool) -> int:
    """Fold one origin listing (already in the scratch table) into the inventory.

    New and changed files are upserted; files missing from listed directories,
    or from directories recorded last time that no longer exist, are marked
    gone; the directory table is replaced (with each directory's digest); and
    the origin's generation is bumped when anything changed. Returns the
    number of inventory rows changed.

    Directories found as recorded ('u') or skipped ('s') have no file rows and
    lose nothing. Gone-marking looks only at listed and vanished directories,
    through the (origin, dir) index: every directory holding a file of the
    inventory was recorded by the scan that found the file.

    ``last_seen`` of a file is when a scan last found it new or changed; every
    file not marked gone was present at the origin's last scan (origin_status),
    which spares a write per file per scan.
    """
    fold_alone(connection, origin)
    now = now_utc()
    parameters = {"origin": origin, "scan": scan_id, "now": now, "false": False, "true": True}
    changed = connection.execute(
        text(
            """
            INSERT INTO origin_files
                (origin, path, dir, size, mtime_ns, first_seen, last_seen, gone_since, from_replica)
            SELECT :origin, s.path, s.dir, s.size, s.mtime_ns, :now, :now, NULL, :false
            FROM scan_entries s WHERE s.scan_id = :scan AND s.entry_type = 'f'
            ON CONFLICT (origin, path) DO UPDATE SET
                sha256 = CASE WHEN origin_files.size = excluded.size AND origin_files.mtime_ns = excluded.mtime_ns
                              THEN origin_files.sha256 ELSE NULL END,
                size = excluded.size, mtime_ns = excluded.mtime_ns, dir = excluded.dir,
                last_seen = excluded.last_seen, gone_since = NULL, from_replica = excluded.from_replica,
                trimmed_at = NULL
            WHERE origin_files.size <> excluded.size OR origin_files.mtime_ns <> excluded.mtime_ns
               OR origin_files.gone_since IS NOT NULL OR origin_files.from_replica = :true
               OR origin_files.trimmed_at IS NOT NULL
            """
        ),
        parameters,
    ).rowcount
    changed += connection.execute(
        text(
            """
            UPDATE origin_files SET gone_since = :now
            WHERE origin = :origin AND gone_since IS NULL AND from_replica = :false AND trimmed_at IS NULL
              AND dir IN (
                SELECT path FROM scan_entries WHERE scan_id = :scan AND entry_type = 'd'
                UNION
                SELECT path FROM scanned_dirs WHERE origin = :origin AND path NOT IN (
                    SELECT path FROM scan_entries WHERE scan_id = :scan AND entry_type IN ('d', 'u', 's'))
              )
              AND NOT EXISTS (SELECT 1 FROM scan_entries s WHERE s.scan_id = :scan AND s.entry_type = 'f'
                              AND s.path = origin_files.path)
            """
        ),
        parameters,
    ).rowcount
    dir_table = ScannedDir.__table__  # type: ignore[attr-defined]
    connection.execute(delete(dir_table).where(dir_table.c.origin == origin))
    rows = [{"origin": origin, "path": paths.to_text(entry.path), "mtime_ns": entry.mtime_ns,
             "settled": entry.settled, "digest": entry.digest} for entry in dirs]
    for start in range(0, len(rows), CHUNK):
        connection.execute(insert(dir_table), rows[start : start + CHUNK])
    # The generation is bumped in the statement, never read-modified-written.
    connection.execute(
        text(
            """
            INSERT INTO origin_status (origin, last_scan, last_full_scan, generation)
            VALUES (:origin, :now, :full, :bump)
            ON CONFLICT (origin) DO UPDATE SET
                last_scan = excluded.last_scan,
                last_full_scan = COALESCE(excluded.last_full_scan, origin_status.last_full_scan),
                generation = origin_status.generation + excluded.generation
            """
        ),
        {"origin": origin, "now": now, "full": now if full else None, "bump": 1 if changed else 0},
    )
    return int(changed)


class Candidate(NamedTuple):
    """One origin file the replica has no matching record of."""

    path: str
    size: int
    mtime_ns: int
    recorded: bool  # the replica has a record, but of another size/mtime


class CandidateSet:
    """Candidates as columns (a list of paths, arrays of sizes and mtimes): a million of
    them cost about 100 bytes each instead of a tuple and three objects per file."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.sizes = array("q")
        self.mtimes = array("q")
        self.recorded = bytearray()

    @classmethod
    def of(cls, rows: Iterable[Candidate | tuple[str, int, int, bool]]) -> CandidateSet:
        result = cls()
        for path, size, mtime_ns, recorded in rows:
            result.append(path, size, mtime_ns, recorded)
        return result

    def append(self, path: str, size: int, mtime_ns: int, recorded: bool) -> None:
        self.paths.append(path)
        self.sizes.append(size)
        self.mtimes.append(mtime_ns)
        self.recorded.append(1 if recorded else 0)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Candidate]:
        for index, path in enumerate(self.paths):
            yield Candidate(path, self.sizes[index], self.mtimes[index], bool(self.recorded[index]))


def candidates(connection: Connection, replica: str, origin: str) -> CandidateSet:
    """Files of ``origin`` that ``replica`` has no matching record of (new or changed), by path.
    Rows are streamed a block at a time, never all held twice."""
    result = CandidateSet()
    for block in fetch_blocks(
        connection,
        """
        SELECT f.path, f.size, f.mtime_ns, CASE WHEN c.file_id IS NULL THEN 0 ELSE 1 END
        FROM origin_files f
        LEFT JOIN replica_copies c ON c.file_id = f.id AND c.replica = :replica
        WHERE f.origin = :origin AND f.gone_since IS NULL AND f.from_replica = :false AND f.trimmed_at IS NULL
          AND (c.file_id IS NULL OR c.size <> f.size OR c.mtime_ns <> f.mtime_ns)
        ORDER BY f.path
        """,
        {"replica": replica, "origin": origin, "false": False},
    ):
        found_paths, sizes, mtimes, recorded = zip(*block, strict=True)
        result.paths.extend(found_paths)
        result.sizes.extend(sizes)
        result.mtimes.extend(mtimes)
        result.recorded.extend(recorded)  # 0 or 1
    return result


def fetch_blocks(connection: Connection, query: str, parameters: dict[str, object]) -> Iterator[list[tuple]]:
    """The rows of a large query as plain tuples, ``CHUNK`` at a time: through the SQLite
    driver's own cursor (SQLAlchemy's rows cost more than the query), elsewhere as a
    server-side cursor."""
    if connection.dialect.name == "sqlite":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(query, parameters)
            while block := cursor.fetchmany(CHUNK):
                yield block
        finally:
            cursor.close()
        return
    rows = connection.execute(text(query).execution_options(stream_results=True, yield_per=CHUNK), parameters)
    while block := rows.fetchmany(CHUNK):
        yield [tuple(row) for row in block]


def pair_complete_generation(connection: Connection, replica: str, origin: str) -> int:
    table = PairStatus.__table__  # type: ignore[attr-defined]
    value = connection.execute(
        select(table.c.complete_generation).where(table.c.replica == replica, table.c.origin == origin)
    ).scalar()
    return -1 if value is None else int(value)


def set_pair_complete(connection: Connection, replica: str, origin: str, generation: int) -> None:
    put_row(connection, PairStatus.__table__, {"replica": replica, "origin": origin},  # type: ignore[attr-defined]
            {"complete_generation": generation})


def replica_status(connection: Connection, replica: str) -> ReplicaStatus:
    table = ReplicaStatus.__table__  # type: ignore[attr-defined]
    row = connection.execute(select(table).where(table.c.replica == replica)).mappings().first()
    return ReplicaStatus(**row) if row else ReplicaStatus(replica=replica)


def touch_replica(connection: Connection, replica: str, *, sync: datetime | None = None,
                  verify: datetime | None = None) -> None:
    values = {}
    if sync is not None:
        values["last_sync"] = sync
    if verify is not None:
        values["last_verify"] = verify
    if values:
        put_row(connection, ReplicaStatus.__table__, {"replica": replica}, values)  # type: ignore[attr-defined]


def verify_against_listing(connection: Connection, replica: str, origin: str, scan_id: str) -> list[str]:
    """Compare a replica's records with a fresh listing of ``<replica>/<origin>/`` (in the
    scratch table). Records whose copy is missing or differs (size, or mtime to the
    second) are dropped and their paths returned (drift); the rest are marked verified."""
    parameters = {"replica": replica, "origin": origin, "scan": scan_id, "now": now_utc()}
    mismatch = """
        FROM replica_copies c JOIN origin_files f ON f.id = c.file_id
        WHERE c.replica = :replica AND f.origin = :origin AND NOT EXISTS (
            SELECT 1 FROM scan_entries s WHERE s.scan_id = :scan AND s.entry_type = 'f' AND s.path = f.path
            AND s.size = c.size AND s.mtime_ns / 1000000000 = c.mtime_ns / 1000000000)
    """
    drifted = [row[0] for row in connection.execute(text("SELECT f.path " + mismatch), parameters)]
    if drifted:
        connection.execute(
            text(f"DELETE FROM replica_copies WHERE replica = :replica AND file_id IN (SELECT c.file_id {mismatch})"),
            parameters,
        )
        bump_copies(connection, replica)
    connection.execute(
        text(
            "UPDATE replica_copies SET verified_at = :now WHERE replica = :replica AND file_id IN "
            "(SELECT id FROM origin_files WHERE origin = :origin)"
        ),
        parameters,
    )
    return sorted(drifted)


class Unrecorded(NamedTuple):
    """A file on a replica that the inventory has no replica record of."""

    path: str
    size: int
    mtime_ns: int
    origin_size: int | None  # the origin file's size/mtime when the origin knows it
    origin_mtime_ns: int | None


def unrecorded(connection: Connection, replica: str, origin: str, scan_id: str) -> Iterator[Unrecorded]:
    rows = connection.execute(
        text(
            """
            SELECT s.path, s.size, s.mtime_ns, f.size, f.mtime_ns, f.from_replica
            FROM scan_entries s
            LEFT JOIN origin_files f ON f.origin = :origin AND f.path = s.path
            LEFT JOIN replica_copies c ON c.file_id = f.id AND c.replica = :replica
            WHERE s.scan_id = :scan AND s.entry_type = 'f' AND c.file_id IS NULL
            ORDER BY s.path
            """
        ),
        {"replica": replica, "origin": origin, "scan": scan_id},
    )
    for path, size, mtime_ns, origin_size, origin_mtime, from_replica in rows:
        known = origin_size is not None and not from_replica
        yield Unrecorded(path, size, mtime_ns, origin_size if known else None, origin_mtime if known else None)


def record_copied(connection: Connection, replica: str, origin: str, copied: list[str]) -> int:
    """Record that the files at ``copied`` (stored path text) were just copied to ``replica``,
    with the size and mtime the inventory holds for them (what the plan copied); returns the
    bytes recorded (the copy's progress), from the same join, not from a second lookup.

    On SQLite the paths go into a TEMP table (in memory, no index, this connection only)
    and one statement joins them; elsewhere through the scratch table (COPY is fast there)."""
    if connection.dialect.name != "sqlite":
        scan_id = new_scan_id()
        load_paths(connection, scan_id, ((path, 0, 0) for path in copied), with_dirs=False)
        record_copies(connection, replica, origin, scan_id, enrolled=False)
        recorded = connection.execute(
            text("SELECT COALESCE(SUM(f.size), 0) FROM scan_entries s JOIN origin_files f "
                 "ON f.origin = :origin AND f.path = s.path WHERE s.scan_id = :scan_id"),
            {"origin": origin, "scan_id": scan_id}).scalar_one()
        drop_scan(connection, scan_id)
        return int(recorded)
    now = now_utc().isoformat(" ")  # the text sqlite3 stores for a datetime, made once
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS copied_paths (path TEXT NOT NULL)")
        cursor.execute("DELETE FROM temp.copied_paths")
        cursor.executemany("INSERT INTO temp.copied_paths (path) VALUES (?)", zip(copied))
        cursor.execute(
            """
            INSERT INTO replica_copies (replica, file_id, size, mtime_ns, copied_at, verified_at)
            SELECT ?, f.id, f.size, f.mtime_ns, ?, ?
            FROM temp.copied_paths c JOIN origin_files f ON f.origin = ? AND f.path = c.path
            WHERE true
            ON CONFLICT (replica, file_id) DO UPDATE SET
                size = excluded.size, mtime_ns = excluded.mtime_ns,
                copied_at = excluded.copied_at, verified_at = excluded.verified_at,
                sha256 = NULL, checked_at = NULL, corrupt_since = NULL
            """,
            (replica, now, now, origin),
        )
        # (no RETURNING: SQLite has it only from 3.35, and RHEL 8's Python links 3.26)
        cursor.execute("SELECT COALESCE(SUM(f.size), 0) FROM temp.copied_paths c JOIN origin_files f "
                       "ON f.origin = ? AND f.path = c.path", (origin,))
        recorded = int(cursor.fetchone()[0])
        cursor.execute("DELETE FROM temp.copied_paths")
    finally:
        cursor.close()
    bump_copies(connection, replica)
    return recorded


def record_copies(connection: Connection, replica: str, origin: str, scan_id: str, enrolled: bool) -> int:
    """Record replica copies of the files in the scratch table ``scan_id``.

    ``enrolled``: the files were found on the replica (their listed size/mtime is
    recorded, and origin rows are created for files the origin has never shown);
    otherwise they were just copied (the origin's size/mtime is recorded).
    """
    parameters = {"replica": replica, "origin": origin, "scan": scan_id, "now": now_utc(), "true": True}
    if enrolled:
        connection.execute(
            text(
                """
                INSERT INTO origin_files (origin, path, dir, size, mtime_ns, first_seen, last_seen, gone_since,
                                          from_replica)
                SELECT :origin, s.path, s.dir, s.size, s.mtime_ns, :now, :now, NULL, :true
                FROM scan_entries s WHERE s.scan_id = :scan AND s.entry_type = 'f'
                ON CONFLICT (origin, path) DO NOTHING
                """
            ),
            parameters,
        )
        source, copied_at = "s", "NULL"
    else:
        source, copied_at = "f", ":now"
    bump_copies(connection, replica)
    return int(
        connection.execute(
            text(
                f"""
                INSERT INTO replica_copies (replica, file_id, size, mtime_ns, copied_at, verified_at)
                SELECT :replica, f.id, {source}.size, {source}.mtime_ns, {copied_at}, :now
                FROM scan_entries s JOIN origin_files f ON f.origin = :origin AND f.path = s.path
                WHERE s.scan_id = :scan AND s.entry_type = 'f'
                ON CONFLICT (replica, file_id) DO UPDATE SET
                    size = excluded.size, mtime_ns = excluded.mtime_ns,
                    copied_at = COALESCE(excluded.copied_at, replica_copies.copied_at),
                    verified_at = excluded.verified_at,
                    sha256 = NULL, checked_at = NULL, corrupt_since = NULL
                """
            ),
            parameters,
        ).rowcount
    )


# --- content checksums, the replica marker, the scrub ------------------------------------------
#
# Hashes travel through the scratch table like listings do (set-based, never one ORM object
# per file): a row of type 'h' carries a file's path, the size and mtime it was hashed at,
# and its sha256 in the ``dir`` column.


def holds_copies(connection: Connection, replica: str) -> bool:
    """Whether the inventory records any copy on ``replica``."""
    return connection.execute(text("SELECT 1 FROM replica_copies WHERE replica = :r LIMIT 1"),
                              {"r": replica}).first() is not None


def marker_owner(connection: Connection, marker_id: str | None, replica: str) -> str | None:
    """The replica other than ``replica`` whose marker id the state records as ``marker_id``."""
    if marker_id is None:
        return None
    row = connection.execute(text("SELECT replica FROM replica_status WHERE marker_id = :m AND replica <> :r"),
                             {"m": marker_id, "r": replica}).first()
    return row[0] if row else None


def set_replica_fields(connection: Connection, replica: str, **values: Any) -> None:
    put_row(connection, ReplicaStatus.__table__, {"replica": replica}, values)  # type: ignore[attr-defined]


class Expected(NamedTuple):
    """What the inventory holds of an origin file a copy is checked against."""

    sha256: str | None
    present: bool  # on the origin (not gone, not known only from a replica)
    size: int
    mtime_ns: int


def expected_hashes(connection: Connection, origin: str, files: list[str]) -> dict[str, Expected]:
    """The inventory's sha256 (None: not hashed yet), presence, size and mtime of ``files``."""
    scan_id = new_scan_id()
    try:
        load_paths(connection, scan_id, ((path, 0, 0) for path in files), with_dirs=False)
        rows = connection.execute(text(
            "SELECT f.path, f.sha256, CASE WHEN f.gone_since IS NULL AND f.from_replica = :false "
            "AND f.trimmed_at IS NULL THEN 1 ELSE 0 END, "
            "f.size, f.mtime_ns FROM scan_entries s JOIN origin_files f ON f.origin = :origin AND f.path = s.path "
            "WHERE s.scan_id = :scan"), {"origin": origin, "scan": scan_id, "false": False})
        return {path: Expected(digest, bool(present), int(size), int(mtime)) for path, digest, present, size, mtime
                in rows}
    finally:
        drop_scan(connection, scan_id)


def store_origin_hashes(connection: Connection, origin: str, rows: list[tuple[str, str, int, int]]) -> None:
    """Record (path, sha256, size, mtime_ns) of origin files, each only while the inventory
    still holds that size and mtime for it (a file changed meanwhile is hashed again later)."""
    scan_id = new_scan_id()
    bulk_insert_scan(connection, ((scan_id, "h", path, digest, size, mtime) for path, digest, size, mtime in rows))
    connection.execute(text(
        """
        UPDATE origin_files SET sha256 = (SELECT s.dir FROM scan_entries s WHERE s.scan_id = :scan
                                          AND s.path = origin_files.path)
        WHERE origin = :origin AND EXISTS (SELECT 1 FROM scan_entries s WHERE s.scan_id = :scan
              AND s.path = origin_files.path AND s.size = origin_files.size AND s.mtime_ns = origin_files.mtime_ns)
        """), {"origin": origin, "scan": scan_id})
    drop_scan(connection, scan_id)


def mark_checked(connection: Connection, replica: str, origin: str, verified: list[tuple[str, str]],
                 corrupt: list[tuple[str, str | None]]) -> None:
    """Record the outcome of reading copies on ``replica``: (path, sha256) verified now, and
    (path, sha256 found or None when unreadable) corrupt (since the first time found so)."""
    now = now_utc()
    for rows, sql in (
        (verified, "checked_at = :now, corrupt_since = NULL"),
        (corrupt, "checked_at = NULL, corrupt_since = COALESCE(corrupt_since, :now)"),
    ):
        if not rows:
            continue
        scan_id = new_scan_id()
        bulk_insert_scan(connection, ((scan_id, "h", path, digest or "", 0, 0) for path, digest in rows))
        connection.execute(text(
            f"""
            UPDATE replica_copies SET {sql},
                sha256 = (SELECT NULLIF(s.dir, '') FROM scan_entries s JOIN origin_files f ON f.path = s.path
                          WHERE s.scan_id = :scan AND f.id = replica_copies.file_id)
            WHERE replica = :replica AND file_id IN (
                SELECT f.id FROM scan_entries s JOIN origin_files f ON f.origin = :origin AND f.path = s.path
                WHERE s.scan_id = :scan)
            """), {"replica": replica, "origin": origin, "scan": scan_id, "now": now})
        drop_scan(connection, scan_id)


class ScrubFacts(NamedTuple):
    """The copies of one (replica, origin) a scrub reads now, verified longest ago first."""

    paths: list[str]
    sizes: list[int]
    corrupt: int  # of them, found corrupt before (their repair is retried)
    unverified: int  # of them, never verified
    due: int  # copies due in all (the budget may leave some for the next run)
    due_bytes: int


def scrub_due(connection: Connection, replica: str, origin: str, due_before: datetime | None,
              budget: int | None) -> ScrubFacts:
    """Copies of ``origin`` on ``replica`` to read now: corrupt ones, never verified ones, then
    (when ``due_before`` is set) those verified before it, oldest first, up to ``budget``
    bytes (at least one, so a copy larger than the budget is still read some day). Only
    copies of the origin file as the inventory holds it (others are copied again anyway)."""
    due_sql = "OR c.checked_at < :due" if due_before is not None else ""
    query = f"""
        SELECT f.path, c.size, CASE WHEN c.corrupt_since IS NOT NULL THEN 0
                                    WHEN c.checked_at IS NULL THEN 1 ELSE 2 END AS rank, c.checked_at
        FROM replica_copies c JOIN origin_files f ON f.id = c.file_id
        WHERE c.replica = :replica AND f.origin = :origin AND c.size = f.size AND c.mtime_ns = f.mtime_ns
          AND (c.checked_at IS NULL {due_sql})
        ORDER BY rank, c.checked_at, f.path
    """
    parameters: dict[str, object] = {"replica": replica, "origin": origin}
    if due_before is not None:
        parameters["due"] = due_before
    picked: list[str] = []
    sizes: list[int] = []
    total = corrupt = unverified = due = due_bytes = 0
    for block in fetch_blocks(connection, query, parameters):
        for path, size, rank, _ in block:
            due += 1
            due_bytes += int(size)
            if budget is not None and picked and total + int(size) > budget:
                continue
            picked.append(path)
            sizes.append(int(size))
            total += int(size)
            corrupt += rank == 0
            unverified += rank == 1
    return ScrubFacts(picked, sizes, corrupt, unverified, due, due_bytes)


class StagedScrub(NamedTuple):
    """A scrub's copies, put in the scratch table (``scan_id``) rather than in memory: how many
    and their bytes, of them corrupt and never verified, and the copies due in all."""

    scan_id: str
    copies: int
    bytes: int
    corrupt: int
    unverified: int
    due: int
    due_bytes: int


def stage_scrub(connection: Connection, replica: str, origin: str, due_before: datetime | None,
                budget: int | None) -> StagedScrub:
    """``scrub_due`` for a scrub of any size: the copies to read go, in the order they are read,
    into the scratch table in one INSERT ... SELECT (set-based; nothing per copy in Python),
    to be read back ``SCRUB_BLOCK`` at a time by ``staged_paths``. With ``budget``, the copies
    taken are those in order while the running total of bytes stays within it (at least one).
    The caller drops the scratch rows (``drop_scan``); a killed run's are swept later."""
    scan_id = new_scan_id()
    due_sql = "OR c.checked_at < :due" if due_before is not None else ""
    parameters: dict[str, object] = {"replica": replica, "origin": origin, "scan": scan_id}
    if due_before is not None:
        parameters["due"] = due_before
    ranked = f"""
        SELECT f.path AS path, c.size AS size, c.checked_at AS checked_at,
               CASE WHEN c.corrupt_since IS NOT NULL THEN 0 WHEN c.checked_at IS NULL THEN 1 ELSE 2 END AS rank
        FROM replica_copies c JOIN origin_files f ON f.id = c.file_id
        WHERE c.replica = :replica AND f.origin = :origin AND c.size = f.size AND c.mtime_ns = f.mtime_ns
          AND (c.checked_at IS NULL {due_sql})
    """
    order = "rank, checked_at, path"
    picked = ""
    if budget is not None:
        parameters["budget"] = budget
        picked = "WHERE running <= :budget OR number = 1"
    connection.execute(text(f"""
        INSERT INTO scan_entries (scan_id, entry_type, path, dir, size, mtime_ns)
        SELECT :scan, 'v', path, '', size, rank FROM (
            SELECT path, size, rank, checked_at,
                   SUM(size) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS running,
                   ROW_NUMBER() OVER (ORDER BY {order}) AS number
            FROM ({ranked}) AS ranked) AS due
        {picked}
        ORDER BY {order}
    """), parameters)
    due, due_bytes = connection.execute(text(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM ({ranked}) AS ranked"),
                                        parameters).one()
    count, size, corrupt, unverified = connection.execute(text(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN mtime_ns = 0 THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN mtime_ns = 1 THEN 1 ELSE 0 END), 0) FROM scan_entries WHERE scan_id = :scan"),
        parameters).one()
    return StagedScrub(scan_id, int(count), int(size), int(corrupt), int(unverified), int(due), int(due_bytes))


def staged_paths(engine: Any, scan_id: str, block: int = CHUNK) -> Iterator[list[str]]:
    """The paths ``stage_scrub`` put in the scratch table, in order, ``block`` at a time, each
    block read in a short transaction of its own (the scrub records its results between)."""
    last = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(text(
                "SELECT id, path FROM scan_entries WHERE scan_id = :scan AND id > :last ORDER BY id "
                f"LIMIT {int(block)}"), {"scan": scan_id, "last": last}).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [path for _, path in rows]


def next_scrub_due(connection: Connection, replica: str) -> datetime | None:
    """The oldest verification time of the copies on ``replica`` (None when none is verified)."""
    from sqlalchemy import func

    table = ReplicaCopy.__table__  # type: ignore[attr-defined]
    value = connection.execute(  # typed: SQLite hands back text for a bare MIN() of a time
        select(func.min(table.c.checked_at).label("oldest")).where(table.c.replica == replica)).scalar()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value) if isinstance(value, datetime) else None


def unchecked_copies(connection: Connection, replica: str) -> bool:
    """Whether some copy on ``replica`` is unverified or corrupt."""
    return connection.execute(text("SELECT 1 FROM replica_copies WHERE replica = :r AND "
                                   "checked_at IS NULL LIMIT 1"),
                              {"r": replica}).first() is not None


def lost_files(connection: Connection, replica: str, origin: str, limit: int = 5) -> tuple[int, list[str]]:
    """Files of ``origin`` with a corrupt copy on ``replica``, gone from the origin, and no copy
    anywhere that is not corrupt: (how many, the first few paths)."""
    where = """
        FROM origin_files f JOIN replica_copies c ON c.file_id = f.id AND c.replica = :replica
        WHERE f.origin = :origin AND c.checked_at IS NULL AND c.corrupt_since IS NOT NULL
          AND (f.gone_since IS NOT NULL OR f.from_replica = :true OR f.trimmed_at IS NOT NULL)
          AND NOT EXISTS (SELECT 1 FROM replica_copies o WHERE o.file_id = f.id AND o.corrupt_since IS NULL)
    """
    parameters = {"replica": replica, "origin": origin, "true": True}
    count = connection.execute(text("SELECT COUNT(*) " + where), parameters).scalar() or 0
    if not count:
        return 0, []
    first = [row[0] for row in connection.execute(text(f"SELECT f.path {where} ORDER BY f.path LIMIT {int(limit)}"),
                                                  parameters)]
    return int(count), first


def good_copies(connection: Connection, origin: str, files: list[str], exclude: str) -> dict[str, list[str]]:
    """Replicas (other than ``exclude``) whose copy of each file is verified and not corrupt."""
    scan_id = new_scan_id()
    try:
        load_paths(connection, scan_id, ((path, 0, 0) for path in files), with_dirs=False)
        rows = connection.execute(text(
            "SELECT f.path, c.replica FROM scan_entries s "
            "JOIN origin_files f ON f.origin = :origin AND f.path = s.path "
            "JOIN replica_copies c ON c.file_id = f.id WHERE s.scan_id = :scan AND c.replica <> :exclude "
            "AND c.checked_at IS NOT NULL AND c.corrupt_since IS NULL AND c.sha256 = f.sha256 "
            "ORDER BY c.checked_at DESC"),
            {"origin": origin, "scan": scan_id, "exclude": exclude})
        found: dict[str, list[str]] = {}
        for path, replica in rows:
            found.setdefault(path, []).append(replica)
        return found
    finally:
        drop_scan(connection, scan_id)


# --- forgetting a retired or lost replica -----------------------------------------------------


class Forgotten(NamedTuple):
    """What the state records of one replica (optionally for one origin): its copies and their
    bytes, its (replica, origin) completeness rows, whether its status row (marker id, device,
    offline time, last sync) goes too, and how many files gone, trimmed or known only from a
    replica have no other recorded copy (after the forget the state knows of no copy of them)."""

    copies: int
    bytes: int
    origins: list[str]
    pairs: int
    status: bool
    marker_id: str | None
    only_copies: int


def known_replicas(connection: Connection) -> list[str]:
    """Every replica key the state records anything about."""
    rows = connection.execute(text(
        "SELECT replica FROM replica_status UNION SELECT DISTINCT replica FROM replica_copies "
        "UNION SELECT replica FROM replica_pair_status ORDER BY 1"))
    return [row[0] for row in rows]


def forget_replica(connection: Connection, replica: str, origin: str | None, apply: bool) -> Forgotten:
    """The state's records of ``replica`` (only those of ``origin`` when given), counted and, with
    ``apply``, deleted: its copies, its completeness rows and, without ``origin``, its status row.
    Set-based: a million copies are three statements, not a million objects. Touches no file."""
    parameters: dict[str, object] = {"r": replica, "o": origin, "true": True}
    in_origin = " AND c.file_id IN (SELECT id FROM origin_files WHERE origin = :o)" if origin else ""
    copies, size = connection.execute(text(
        f"SELECT COUNT(*), COALESCE(SUM(c.size), 0) FROM replica_copies c WHERE c.replica = :r{in_origin}"),
        parameters).one()
    origins = [row[0] for row in connection.execute(text(
        "SELECT DISTINCT f.origin FROM replica_copies c JOIN origin_files f ON f.id = c.file_id "
        f"WHERE c.replica = :r{in_origin} ORDER BY 1"), parameters)]
    only = connection.execute(text(
        "SELECT COUNT(*) FROM replica_copies c JOIN origin_files f ON f.id = c.file_id "
        f"WHERE c.replica = :r{in_origin} "
        "AND (f.gone_since IS NOT NULL OR f.trimmed_at IS NOT NULL OR f.from_replica = :true) "
        "AND NOT EXISTS (SELECT 1 FROM replica_copies o WHERE o.file_id = c.file_id AND o.replica <> :r)"),
        parameters).scalar() or 0
    pair_filter = "replica = :r" + (" AND origin = :o" if origin else "")
    pairs = connection.execute(text(f"SELECT COUNT(*) FROM replica_pair_status WHERE {pair_filter}"),
                               parameters).scalar() or 0
    status = connection.execute(text("SELECT marker_id FROM replica_status WHERE replica = :r"), parameters).first()
    drops_status = status is not None and origin is None
    if apply:
        connection.execute(text(f"DELETE FROM replica_copies WHERE replica = :r"
                                f"{in_origin.replace('c.file_id', 'file_id')}"), parameters)
        bump_copies(connection, replica, create=False)  # forgetting makes no status row
        connection.execute(text(f"DELETE FROM replica_pair_status WHERE {pair_filter}"), parameters)
        if drops_status:
            connection.execute(text("DELETE FROM replica_status WHERE replica = :r"), parameters)
    return Forgotten(int(copies), int(size), origins, int(pairs), drops_status,
                     status[0] if status is not None else None, int(only))

"""What a replicas observation that found nothing to do rests on: its no-change memo
(engine/memo.py).

A later run may skip observing when its own fast path would read nothing either: every
origin is immutable and local, so a directory whose mtime is as recorded (and whose files
were all settled) is not re-read; every replica is local; every (replica, origin) pair is
complete at its origin's generation, so the inventory is not queried. The memo holds
exactly those premises: every recorded directory with its mtime, the rows of the state
that say so, the replicas' roots, rsync on PATH, and the time by which a full scan or a
verification (or, with checksums, a scrub) falls due, and a removable replica root's mtime (its
marker removed is never replayed; an unmounted disk is another directory). Anything else (an ssh
location, a mutable origin, a directory still settling, a pair not complete, an enrolment not yet
listed) offers no memo. What is due and when is decided once, by the observer (due.py's
``Ledger``); this module only adds the facts a replay checks.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.engine import Connection

from reconciler.engine.memo import Memo, fact
from reconciler.kinds.replicas import paths
from reconciler.kinds.replicas.due import Ledger, pair_complete
from reconciler.kinds.replicas.tables import OriginStatus, PairStatus, ReplicaStatus, ScannedDir
from reconciler.providers.location import Location
from reconciler.providers.process import require

# The rows a memo's facts read back (plain SQL: the replay runs them with sqlite3).
ORIGIN_GENERATION = f"SELECT generation FROM {OriginStatus.__tablename__} WHERE origin = :origin"
ORIGIN_DIRECTORIES = (f"SELECT path, mtime_ns, settled, digest FROM {ScannedDir.__tablename__} "
                      "WHERE origin = :origin ORDER BY path")
REPLICA_PAIRS = (f"SELECT origin, complete_generation FROM {PairStatus.__tablename__} "
                 "WHERE replica = :replica ORDER BY origin")
REPLICA_VERIFIED = f"SELECT last_verify FROM {ReplicaStatus.__tablename__} WHERE replica = :replica"


def replicas_memo(connection: Connection, desired: Any, replicas: dict[str, tuple[Any, Location, list[str]]],
                  ledger: Ledger) -> Memo | None:
    """The memo of an observation of every origin and of ``replicas`` (key: (config,
    location, origin names)), read in the caller's transaction; None when a later run
    could not tell "nothing to do" without observing.

    Nothing is decided here: what was due, and when the rest falls due, is the observer's
    ``ledger`` (due.py). What is added are the facts a replay checks to know the world is as
    the observer saw it: directories and their mtimes, state rows, replica roots, rsync."""
    if ledger.unsettled:
        return None
    memo = Memo(programs=[("rsync", require("rsync", "rsync"))])
    generations: dict[str, int] = {}
    for name, origin in desired.origins.items():
        generation, generation_rows = fact(connection, ORIGIN_GENERATION, origin=name)
        directories, rows = fact(connection, ORIGIN_DIRECTORIES, origin=name)
        if not generation_rows or not rows or not all(row[2] for row in rows):
            return None  # never listed, or a directory still settling: read again
        root = os.fsencode(origin.location.path)
        memo.directories += [(os.fsdecode(os.path.join(root, paths.to_bytes(path)) if path else root), mtime_ns)
                             for path, mtime_ns, *_ in rows]
        memo.facts += [generation, directories]
        generations[name] = generation_rows[0][0]  # as digested, not as another read saw it
    for key, (replica, location, origins) in replicas.items():
        pairs, rows = fact(connection, REPLICA_PAIRS, replica=key)
        complete = {origin: generation for origin, generation in rows}
        if not all(pair_complete(complete.get(name), generations[name]) for name in origins):
            return None  # the rows digested say otherwise: another run wrote in between
        verified, _ = fact(connection, REPLICA_VERIFIED, replica=key)
        mount = os.stat(location.path)
        memo.writable.append((location.path, mount.st_dev, mount.st_ino))
        if replica.removable:
            # A removable disk's root mtime too: its marker or an origin's directory removed (an
            # emptied disk) is never replayed as "no changes" (an unmount changes st_dev above).
            memo.directories.append((location.path, mount.st_mtime_ns))
        memo.facts += [pairs, verified]
    until = ledger.valid_until
    memo.valid_until = until.timestamp() if until is not None else None
    return memo

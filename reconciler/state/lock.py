"""The locks of a state database: one run that changes the world at a time.

A lock is a guard (guards.py) that dies with its holder: on SQLite an ``flock`` on a
file beside the database (``<db>.lock``), on PostgreSQL a session-level advisory lock
on a connection kept open for the lock's lifetime. The operating system or the server
releases it when the holder's process ends, however it ends (even ``kill -9``). The
``locks`` table only says who holds it (who, host, pid, operation, since, lock id), for
the messages of whoever waits, and for ``force-unlock``.

Whoever takes a free guard replaces the row it finds: that row's holder is provably
gone, and its runs still marked ``running`` are closed as ``interrupted``. One row
cannot be judged from here: on SQLite, a row written on another host (a state
database on a shared file system, whose file locks may not reach this host) is
respected until that host's next run or ``reconciler force-unlock LOCK_ID``.

Locks have names (``apply`` by default: every run that changes the world), so a
later lock can be per address (``held(store, "move", name="project:P12")``).
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, delete, select

from reconciler.errors import LockError
from reconciler.state import guards
from reconciler.state.store import StateStore
from reconciler.state.tables import JournalEntry, LockRecord, RunRecord

LOCK_NAME = "apply"
ROW_GRACE_SECONDS = 5.0  # a holder writes its row right after it takes its guard

log = logging.getLogger("reconciler")


@dataclass
class HeldLock:
    """A lock this process holds: its row and the guard that makes it real."""

    record: LockRecord
    guard: guards.Guard
    replaced: LockRecord | None = None  # the row of a holder that died holding it
    interrupted_runs: list[str] = field(default_factory=list)  # runs of dead holders closed as interrupted

    @property
    def lock_id(self) -> str:
        return self.record.lock_id

    @property
    def name(self) -> str:
        return self.record.name


class _ForeignHolder(Exception):
    def __init__(self, record: LockRecord):
        super().__init__(record.lock_id)
        self.record = record


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def describe(lock: LockRecord) -> str:
    since = lock.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{lock.who} (pid {lock.pid}, {lock.operation} since {since} UTC, lock {lock.lock_id})"


def holder(store: StateStore, name: str = LOCK_NAME) -> LockRecord | None:
    """The row of lock ``name``, if any (its holder may be gone: the lock is its guard)."""
    with store.session() as session:
        return session.exec(select(LockRecord).where(LockRecord.name == name)).first()


def _judged_here(store: StateStore, record: LockRecord) -> bool:
    """Whether this host can tell if ``record``'s holder is alive: always on PostgreSQL (the
    server holds every host's advisory locks), on SQLite only for a holder on this host."""
    return not store.is_sqlite or record.host == socket.gethostname()


def _close_dead_runs(session: Session, name: str) -> list[str]:
    """Mark as interrupted the runs left ``running`` whose lock row is gone (replaced or
    removed: their process died), with their unfinished actions. Returns their ids."""
    live = set(session.exec(select(LockRecord.lock_id)))
    dead = [
        run for run in session.exec(select(RunRecord).where(RunRecord.status == "running"))
        if (run.lock_id is None and name == LOCK_NAME) or (run.lock_id is not None and run.lock_id not in live)
    ]
    found = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    for run in dead:
        run.status = "interrupted"
        session.add(run)
        for entry in session.exec(select(JournalEntry).where(JournalEntry.run_id == run.run_id,
                                                             JournalEntry.status == "started")):
            entry.status = "interrupted"
            entry.error = (f"the run's process died before this action finished (found at {found} UTC by the "
                           "next run to take the lock); the next plan re-observes and redoes what is missing")
            session.add(entry)
    return [run.run_id for run in dead]


def _record(store: StateStore, guard: guards.Guard, name: str, operation: str) -> HeldLock:
    """Write our row under the guard we hold, replacing a dead holder's."""
    record = LockRecord(
        name=name,
        lock_id=str(uuid.uuid4()),
        who=_who(),
        host=socket.gethostname(),
        pid=os.getpid(),
        operation=operation,
        created_at=datetime.now(timezone.utc),
    )
    with store.session() as session:
        previous = session.exec(select(LockRecord).where(LockRecord.name == name)).first()
        if previous is not None:
            if not _judged_here(store, previous):
                raise _ForeignHolder(previous)
            session.delete(previous)
            session.flush()
        session.add(record)
        session.flush()
        interrupted = _close_dead_runs(session, name)
        session.commit()
    held = HeldLock(record, guard, previous, interrupted)
    if previous is not None:
        runs = (f"; its run{'s' if len(interrupted) > 1 else ''} {', '.join(interrupted)} "
                f"{'are' if len(interrupted) > 1 else 'is'} recorded as interrupted") if interrupted else ""
        log.warning("took over the lock of %s: that process is gone%s", describe(previous), runs)
    return held


def _refusal(store: StateStore, current: LockRecord) -> LockError:
    if not _judged_here(store, current):
        return LockError(
            f"the state database is locked by {describe(current)} on another host, {current.host}, which this "
            "host cannot check; wait for it to finish, pass --lock-timeout to wait, or if that run is gone: "
            f"`reconciler force-unlock {current.lock_id}`"
        )
    return LockError(
        f"the state database is locked by {describe(current)}, {_still_running(store, current)}; "
        "wait for it to finish, or pass --lock-timeout (e.g. --lock-timeout 5m) to wait for it"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _still_running(store: StateStore, record: LockRecord) -> str:
    """How a holder whose lock is held is still running: itself, or (its pid gone on this host)
    a process it started that kept its lock open."""
    if record.host != socket.gethostname() or _pid_alive(record.pid):
        return "which is still running"
    where = f" (`fuser {guards.lock_file(store.database_path, record.name)}` names it)" if store.database_path else ""
    return f"whose process is gone but a process it started still holds its lock{where}"


def acquire(store: StateStore, operation: str, timeout: float = 0.0, name: str = LOCK_NAME) -> HeldLock:
    """Take lock ``name`` for ``operation``, waiting up to ``timeout`` seconds.

    A holder that died (kill -9, crash, reboot) never blocks: its guard is gone, so its row
    is replaced and its runs closed as interrupted. Raises LockError naming the holder when
    a live one keeps it (or, on SQLite, one on another host this host cannot check).
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    unrecorded_since: float | None = None
    waited = False
    while True:
        current: LockRecord | None
        guard = guards.try_take(store, name)
        if guard is not None:
            try:
                return _record(store, guard, name, operation)
            except _ForeignHolder as foreign:
                guard.release()
                current = foreign.record
            except IntegrityError:  # a row written without the guard (an older reconciler): judge it again
                guard.release()
                current = holder(store, name)
            except BaseException:
                guard.release()
                raise
        else:
            current = holder(store, name)
        now = time.monotonic()
        if not waited and now < deadline and current is not None:
            waited = True
            log.info("waiting up to %.0f s for the lock held by %s", deadline - now, describe(current))
        if now >= deadline:
            if current is not None:
                raise _refusal(store, current)
            # Held, but its holder has not written its row yet: that takes a moment.
            unrecorded_since = unrecorded_since if unrecorded_since is not None else now
            if now - unrecorded_since >= ROW_GRACE_SECONDS:
                raise LockError(
                    "the state database is locked by another process that has not said who it is; wait for it "
                    "to finish, or pass --lock-timeout (e.g. --lock-timeout 5m) to wait for it"
                )
        time.sleep(guards.POLL_SECONDS)


def release(store: StateStore, lock: HeldLock) -> None:
    """Release a lock we hold: remove its row (a no-op if it was force-unlocked), then its guard."""
    try:
        with store.session() as session:
            session.exec(delete(LockRecord).where(LockRecord.lock_id == lock.lock_id))  # type: ignore[call-overload,arg-type]
            session.commit()
    finally:
        lock.guard.release()


def force_unlock(store: StateStore, lock_id: str) -> LockRecord:
    """Remove the row of lock ``lock_id``, whose holder is gone or on a host this one cannot check.

    Raises LockError when no lock has that id (naming the current one, if any), and when its
    holder provably still holds it (a live run is stopped, not unlocked).
    """
    with store.session() as session:
        record = session.exec(select(LockRecord).where(LockRecord.lock_id == lock_id)).first()
        if record is None:
            current = session.exec(select(LockRecord)).first()
            hint = f"; the current lock is {current.lock_id}" if current else "; the state database is not locked"
            raise LockError(f"no lock with id {lock_id}{hint}")
    if _judged_here(store, record) and not guards.is_free(store, record.name):
        raise LockError(
            f"lock {lock_id} is held by {describe(record)}, {_still_running(store, record)}; force-unlock removes "
            f"only the lock of a run that is gone: let it finish, or stop it (kill {record.pid} on {record.host})"
        )
    with store.session() as session:
        session.exec(delete(LockRecord).where(LockRecord.lock_id == lock_id))  # type: ignore[call-overload,arg-type]
        session.commit()
    return record


@contextmanager
def held(store: StateStore, operation: str, timeout: float = 0.0, name: str = LOCK_NAME) -> Iterator[HeldLock]:
    """Hold lock ``name`` (``apply`` by default) for the ``with`` block.

    Every command that changes the world takes it around all its reads-then-writes, so that
    it never runs beside an apply or reconcile of the same state database::

        with lock.held(app.store, "projects import", timeout):
            ...  # observe, check, write

    ``operation`` is what the messages of anyone waiting will name (e.g. ``"backups
    restore"``); ``timeout`` is how long to wait for a live holder (``--lock-timeout``),
    in seconds. Raises LockError naming the holder when it stays taken; a holder that
    died is replaced at once. The lock is released when the block ends, and by the
    operating system (SQLite) or the server (PostgreSQL) if this process dies in it.
    The yielded ``HeldLock`` has the ``lock_id`` to record with what the block does.
    """
    lock = acquire(store, operation, timeout, name)
    try:
        yield lock
    finally:
        release(store, lock)

"""The apply lock: one apply/reconcile at a time per state database."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy.exc import IntegrityError
from sqlmodel import delete, select

from reconciler.errors import LockError
from reconciler.state.store import StateStore
from reconciler.state.tables import LockRecord

LOCK_NAME = "apply"


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(lock: LockRecord) -> bool:
    """True when the holder ran on this host and its process is gone."""
    return lock.host == socket.gethostname() and not _pid_alive(lock.pid)


def describe(lock: LockRecord) -> str:
    since = lock.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{lock.who} (pid {lock.pid}, {lock.operation} since {since} UTC, lock {lock.lock_id})"


def holder(store: StateStore) -> LockRecord | None:
    """The current lock, if any."""
    with store.session() as session:
        return session.exec(select(LockRecord).where(LockRecord.name == LOCK_NAME)).first()


def _refusal(lock: LockRecord) -> LockError:
    if is_stale(lock):
        return LockError(
            f"the state database holds a stale lock from {describe(lock)}: that process is no longer running; "
            f"remove the lock with `reconciler force-unlock {lock.lock_id}` and run again"
        )
    return LockError(
        f"the state database is locked by {describe(lock)}; wait for it to finish, "
        f"pass --lock-timeout to wait, or if that run is dead: `reconciler force-unlock {lock.lock_id}`"
    )


def acquire(store: StateStore, operation: str, timeout: float = 0.0) -> LockRecord:
    """Take the lock for ``operation``, waiting up to ``timeout`` seconds.

    Raises LockError naming the holder (and whether it is stale) when it stays taken.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        record = LockRecord(
            name=LOCK_NAME,
            lock_id=str(uuid.uuid4()),
            who=_who(),
            host=socket.gethostname(),
            pid=os.getpid(),
            operation=operation,
            created_at=datetime.now(timezone.utc),
        )
        try:
            with store.session() as session:
                session.add(record)
                session.commit()
            return record
        except IntegrityError:
            current = holder(store)
            if current is None:
                continue  # released between our insert and our read: try again
            if time.monotonic() >= deadline or is_stale(current):
                raise _refusal(current) from None
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.05)))


def release(store: StateStore, lock: LockRecord) -> None:
    """Release a lock we hold (a no-op if it was force-unlocked meanwhile)."""
    with store.session() as session:
        session.exec(delete(LockRecord).where(LockRecord.lock_id == lock.lock_id))  # type: ignore[call-overload,arg-type]
        session.commit()


def force_unlock(store: StateStore, lock_id: str) -> LockRecord:
    """Remove the lock ``lock_id`` whoever holds it.

    Raises LockError when no lock has that id (naming the current one, if any).
    """
    with store.session() as session:
        record = session.exec(select(LockRecord).where(LockRecord.lock_id == lock_id)).first()
        if record is None:
            current = session.exec(select(LockRecord)).first()
            hint = f"; the current lock is {current.lock_id}" if current else "; the state database is not locked"
            raise LockError(f"no lock with id {lock_id}{hint}")
        session.delete(record)
        session.commit()
        return record


@contextmanager
def held(store: StateStore, operation: str, timeout: float = 0.0) -> Iterator[LockRecord]:
    """Hold the lock for the duration of a ``with`` block."""
    lock = acquire(store, operation, timeout)
    try:
        yield lock
    finally:
        release(store, lock)

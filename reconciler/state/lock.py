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

On SQLite one lock, ``apply``, serves every run that changes the world. On PostgreSQL a
run of a plan (``run_locks``) holds ``apply`` *shared* and locks each address its plan
touches (``RunLocks.cover``), so that runs on several hosts whose plans share no address
proceed at once; commands that need the whole state (``held``: backups restore, projects
import and export, inventory verify) still hold ``apply`` exclusively. See docs/locks.md.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, or_, select

from reconciler.errors import LockError
from reconciler.hosts import is_this_host, this_host
from reconciler.state import guards
from reconciler.state.store import StateStore
from reconciler.state.tables import JournalEntry, LockRecord, RunRecord

LOCK_NAME = "apply"
SHARED = "#shared#"  # a shared holder's row is named <lock name>#shared#<its lock id>
ROW_GRACE_SECONDS = 5.0  # a holder writes its row right after it takes its guard
# A journal entry at an address that ended this long before a plan began may still be news to
# it (the clocks of the hosts that share a state differ by less than this: keep them in NTP).
REPLAN_MARGIN = timedelta(seconds=120)

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
    return f"{user}@{this_host()}"


def describe(lock: LockRecord) -> str:
    since = lock.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{lock.who} (pid {lock.pid}, {lock.operation} since {since} UTC, lock {lock.lock_id})"


def holder(store: StateStore, name: str = LOCK_NAME) -> LockRecord | None:
    """The row of lock ``name``, if any, else the row of one of its shared holders (its
    holder may be gone: the lock is its guard)."""
    with store.session() as session:
        row = session.exec(select(LockRecord).where(LockRecord.name == name)).first()
        if row is None:
            row = session.exec(select(LockRecord).where(col(LockRecord.name).startswith(name + SHARED,
                                                                                         autoescape=True))
                               .order_by(col(LockRecord.created_at))).first()
        return row


def _judged_here(store: StateStore, record: LockRecord) -> bool:
    """Whether this host can tell if ``record``'s holder is alive: always on PostgreSQL (the
    server holds every host's advisory locks), on SQLite only for a holder on this host."""
    return not store.is_sqlite or is_this_host(record.host)


def _close_dead_runs(session: Session, name: str) -> list[str]:
    """Mark as interrupted the runs left ``running`` whose lock row is gone (replaced or
    removed: their process died), with their unfinished actions. Returns their ids."""
    live = set(session.exec(select(LockRecord.lock_id)))
    dead = [
        run for run in session.exec(select(RunRecord).where(RunRecord.status == "running"))
        if (run.lock_id is None and name == LOCK_NAME) or (run.lock_id is not None and run.lock_id not in live)
    ]
    return _interrupt(session, dead)


def _interrupt(session: Session, dead: list[RunRecord]) -> list[str]:
    """Close ``dead`` runs (their process died) and their unfinished actions as interrupted."""
    found = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
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
    record = _row(name, str(uuid.uuid4()), operation)
    with store.session() as session:
        previous = session.exec(select(LockRecord).where(LockRecord.name == name)).first()
        if previous is not None:
            if not _judged_here(store, previous):
                raise _ForeignHolder(previous)
            session.delete(previous)
            session.flush()
        if not store.is_sqlite and name == LOCK_NAME:
            # The whole state, exclusively: every run holds it (shared or not), so every other
            # row's holder is gone (runs that locked per address and died).
            for other in session.exec(select(LockRecord).where(LockRecord.name != name)):
                previous = previous or other
                session.delete(other)
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


def _row(name: str, lock_id: str, operation: str) -> LockRecord:
    return LockRecord(name=name, lock_id=lock_id, who=_who(), host=this_host(), pid=os.getpid(),
                      operation=operation, created_at=datetime.now(UTC))


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
    if not is_this_host(record.host) or _pid_alive(record.pid):
        return "which is still running"
    where = f" (`fuser {guards.lock_file(store.database_path, record.name)}` names it)" if store.database_path else ""
    return f"whose process is gone but a process it started still holds its lock{where}"


def acquire(store: StateStore, operation: str, timeout: float = 0.0, name: str = LOCK_NAME) -> HeldLock:
    """Take lock ``name`` for ``operation``, waiting up to ``timeout`` seconds.

    A holder that died (kill -9, crash, reboot) never blocks: its guard is gone, so its row
    is replaced and its runs closed as interrupted. Raises LockError naming the holder when
    a live one keeps it (or, on SQLite, one on another host this host cannot check).
    """
    waiting = _Waiting(store, time.monotonic() + max(timeout, 0.0))
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
        waiting.failed(current)


class _Waiting:
    """One wait for a lock, judged the same way wherever a lock is waited for: the holder named
    once when the wait starts, a refusal naming it at the deadline, and a holder that has not
    written its row yet given ``ROW_GRACE_SECONDS`` (taking the lock and writing the row are two
    steps)."""

    def __init__(self, store: StateStore, deadline: float, address: str | None = None):
        self.store = store
        self.deadline = deadline
        self.address = address  # None: the state's own lock
        self.failures = 0
        self.unrecorded_since: float | None = None

    def failed(self, current: LockRecord | None) -> None:
        """After an attempt that did not get the lock: raise LockError at the deadline, else pause."""
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1 and now < self.deadline and current is not None:
            log.info("waiting up to %.0f s for the lock held by %s%s", self.deadline - now, describe(current),
                     f" on {self.address}" if self.address else "")
        if now >= self.deadline:
            what = self.address or "the state database"
            if current is not None:
                if self.address is None:
                    raise _refusal(self.store, current)
                raise LockError(
                    f"{what} is locked by {describe(current)}, {_still_running(self.store, current)}; "
                    "wait for it to finish, or pass --lock-timeout (e.g. --lock-timeout 5m) to wait for it"
                )
            self.unrecorded_since = self.unrecorded_since if self.unrecorded_since is not None else now
            if now - self.unrecorded_since >= ROW_GRACE_SECONDS:
                raise LockError(
                    f"{what} is locked by another process that has not said who it is; wait for it "
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
    # A run that locks per address (PostgreSQL) holds run:<lock id> for its whole life.
    guard = record.name if store.is_sqlite or record.name == LOCK_NAME else f"run:{lock_id}"
    if _judged_here(store, record) and not guards.is_free(store, guard):
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


@dataclass
class RunLocks:
    """The locks of one run of a plan (``run_locks``): on SQLite the whole state (``whole``),
    on PostgreSQL a lock session holding the state shared and, once ``cover`` is called, the
    addresses the plan touches."""

    store: StateStore
    operation: str
    timeout: float
    lock_id: str
    whole: HeldLock | None = None  # SQLite: the apply lock, for everything
    session: guards.AdvisorySession | None = None  # PostgreSQL: the run's lock session
    covered: dict[str, bool] = field(default_factory=dict)  # address -> exclusive
    since: datetime | None = None  # when the plan being covered began to observe
    interrupted_runs: list[str] = field(default_factory=list)

    @property
    def per_address(self) -> bool:
        return self.session is not None

    def mark(self) -> None:
        """Note that a plan begins to observe the world now (``cover`` asks what changed since)."""
        self.since = datetime.now(UTC)

    def cover(self, wanted: dict[str, bool]) -> bool:
        """Hold the locks of ``wanted`` (address -> exclusive) too, taking the new ones in sorted
        order, each waiting up to the run's timeout. Returns True when what a plan observed at
        a newly locked address may have changed since ``mark`` (another run held it, or acted
        on it meanwhile or just before): plan again, now that nobody else can change it.

        On SQLite the whole state is held already: nothing to take, nothing changed.
        Raises LockError naming the holder of an address that stays locked.
        """
        if self.session is None:
            return False
        new = {address: exclusive for address, exclusive in wanted.items()
               if address not in self.covered or (exclusive and not self.covered[address])}
        deadline = time.monotonic() + max(self.timeout, 0.0)
        waited = False
        for address in sorted(new):
            waited = self._take(address, new[address], deadline) or waited
        return waited or self._changed(sorted(new))

    def _take(self, address: str, exclusive: bool, deadline: float) -> bool:
        """Take one address's lock; True when it had to wait for another holder."""
        assert self.session is not None
        waiting = _Waiting(self.store, deadline, address)
        while not self.session.try_lock(address, shared=not exclusive):
            waiting.failed(holder(self.store, address))
        self._write_row(address, exclusive)
        self.covered[address] = exclusive or self.covered.get(address, False)
        return waiting.failures > 0

    def _write_row(self, name: str, exclusive: bool) -> None:
        """Say who holds ``name`` now (a shared holder: a row of its own), replacing the row of
        a holder that died (we hold its lock: it is gone)."""
        row_name = name if exclusive else f"{name}{SHARED}{self.lock_id}"
        found_dead = False
        with self.store.session() as session:
            previous = session.get(LockRecord, row_name)
            if previous is not None:
                found_dead = previous.lock_id != self.lock_id
                session.delete(previous)
                session.flush()
            session.add(_row(row_name, self.lock_id, self.operation))
            session.commit()
        if found_dead:
            self._sweep()

    def _sweep(self) -> None:
        """Remove the rows of runs whose lock session is gone (killed, crashed, their host lost),
        and close those runs as interrupted: each run holds ``run:<lock id>`` for its life."""
        assert self.session is not None
        with self.store.session() as session:
            rows = list(session.exec(select(LockRecord).where(LockRecord.lock_id != self.lock_id)))
            by_id: dict[str, list[LockRecord]] = {}
            for row in rows:
                by_id.setdefault(row.lock_id, []).append(row)
            dead = [lock_id for lock_id, held in by_id.items()
                    # an exclusive holder of the whole state cannot be alive: we hold it shared
                    if any(row.name == LOCK_NAME for row in held) or self.session.is_free(f"run:{lock_id}")]
            if not dead:
                return
            for lock_id in dead:
                for row in by_id[lock_id]:
                    session.delete(row)
            runs = list(session.exec(select(RunRecord).where(RunRecord.status == "running",
                                                             col(RunRecord.lock_id).in_(dead))))
            closed = _interrupt(session, runs)
            session.commit()
        self.interrupted_runs.extend(closed)
        for lock_id in dead:
            shown = min(by_id[lock_id], key=lambda row: (SHARED not in row.name, row.created_at))
            mine = [run.run_id for run in runs if run.lock_id == lock_id]
            ended = (f"; its run{'s' if len(mine) > 1 else ''} {', '.join(mine)} "
                     f"{'are' if len(mine) > 1 else 'is'} recorded as interrupted") if mine else ""
            log.warning("took over the lock of %s: that process is gone%s", describe(shown), ended)

    def _changed(self, addresses: list[str]) -> bool:
        """Whether another run acted on one of ``addresses`` since shortly before ``mark``
        (or has an action there that never finished)."""
        if not addresses or self.since is None:
            return bool(addresses)
        cutoff = self.since - REPLAN_MARGIN
        with self.store.session() as session:
            statement = select(JournalEntry.id).where(
                col(JournalEntry.address).in_(addresses),
                col(JournalEntry.status).not_in(("pending", "skipped")),
                or_(col(JournalEntry.finished_at).is_(None), col(JournalEntry.finished_at) >= cutoff,
                    col(JournalEntry.started_at) >= cutoff),
            ).limit(1)
            return session.exec(statement).first() is not None

    def release(self) -> None:
        """Let every lock of the run go: its rows, then the session (or the whole state's lock)."""
        if self.whole is not None:
            release(self.store, self.whole)
            return
        try:
            with self.store.session() as session:
                session.exec(delete(LockRecord).where(LockRecord.lock_id == self.lock_id))  # type: ignore[call-overload,arg-type]
                session.commit()
        finally:
            if self.session is not None:
                self.session.release()


def _open_run(store: StateStore, operation: str, timeout: float) -> RunLocks:
    """A PostgreSQL run's lock session: its liveness lock, then the whole state shared."""
    session = guards.open_session(store)
    locks = RunLocks(store, operation, timeout, str(uuid.uuid4()), session=session)
    try:
        session.try_lock(f"run:{locks.lock_id}")  # unique to this run: others probe it to see it is alive
        waiting = _Waiting(store, time.monotonic() + max(timeout, 0.0))
        while not session.try_lock(LOCK_NAME, shared=True):
            waiting.failed(holder(store, LOCK_NAME))
        locks._write_row(LOCK_NAME, exclusive=False)
        locks._sweep()
    except BaseException:
        locks.release()
        raise
    return locks


@contextmanager
def run_locks(store: StateStore, operation: str, timeout: float = 0.0) -> Iterator[RunLocks]:
    """The locks of a run that carries out a plan (``apply``, ``reconcile``), for the ``with``
    block. On SQLite: the apply lock, for everything (as ``held``). On PostgreSQL: the whole
    state shared (waiting up to ``timeout`` for a holder of all of it), then each address the
    plan touches as ``RunLocks.cover`` is called with them::

        with lock.run_locks(store, "reconcile", timeout) as locks:
            locks.mark()
            plan = ...                             # observe and diff
            if locks.cover(addresses_of(plan)):    # held now; changed meanwhile:
                plan = ...                         # plan again under the locks

    Everything is released when the block ends, and by the server if this process dies.
    Raises LockError naming the holder of what stays locked.
    """
    if store.is_sqlite:
        with held(store, operation, timeout) as whole:
            yield RunLocks(store, operation, timeout, whole.lock_id, whole=whole)
        return
    locks = _open_run(store, operation, timeout)
    try:
        yield locks
    finally:
        locks.release()


def addresses_of(keys: Iterable[tuple[str, bool]]) -> dict[str, bool]:
    """Fold (address, exclusive) pairs into one lock mode per address (exclusive wins)."""
    found: dict[str, bool] = {}
    for address, exclusive in keys:
        found[address] = found.get(address, False) or exclusive
    return found

"""The apply journal: every run and every action, written before and after it runs."""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlmodel import select

from reconciler.hosts import this_host
from reconciler.secrets import redact
from reconciler.state.store import StateStore
from reconciler.state.tables import JournalEntry, RunRecord

if TYPE_CHECKING:  # the engine is a layer above the state: only its type is named here
    from reconciler.engine.actions import Action


def _now() -> datetime:
    return datetime.now(UTC)


class Journal:
    """The journal of one run. Each write commits at once, so a killed run leaves
    an honest record: actions ``started`` but never finished."""

    def __init__(self, store: StateStore, plan_id: str, operation: str, lock_id: str | None = None):
        """Open a run of ``plan_id`` under the lock ``lock_id`` (see lock.py: a run whose
        lock dies with it is closed as interrupted by the next run)."""
        self.store = store
        self.run_id = uuid.uuid4().hex[:12]
        try:
            who = f"{getpass.getuser()}@{this_host()}"
        except (KeyError, OSError):
            who = this_host()
        with store.session() as session:
            session.add(RunRecord(run_id=self.run_id, plan_id=plan_id, operation=operation, who=who, started_at=_now(),
                                  lock_id=lock_id))
            session.commit()

    def started(self, action: Action) -> int:
        with self.store.session() as session:
            entry = JournalEntry(
                run_id=self.run_id,
                action_id=action.id,
                address=action.address,
                kind=action.kind,
                status="started",
                started_at=_now(),
            )
            session.add(entry)
            session.commit()
            assert entry.id is not None
            return entry.id

    def finished(self, entry_id: int, status: str, error: str | None = None, result: str | None = None) -> None:
        with self.store.session() as session:
            entry = session.get(JournalEntry, entry_id)
            assert entry is not None
            entry.status = status
            entry.finished_at = _now()
            entry.error = redact(error) if error else error
            entry.result = redact(result) if result else result
            session.add(entry)
            session.commit()

    def not_run(self, action: Action, status: str, why: str) -> None:
        """Record an action that was skipped or left pending, with the reason."""
        with self.store.session() as session:
            now = _now()
            session.add(
                JournalEntry(
                    run_id=self.run_id,
                    action_id=action.id,
                    address=action.address,
                    kind=action.kind,
                    status=status,
                    started_at=now,
                    finished_at=now,
                    error=redact(why),
                )
            )
            session.commit()

    def close(self, status: str) -> None:
        with self.store.session() as session:
            run = session.get(RunRecord, self.run_id)
            assert run is not None
            run.status = status
            run.finished_at = _now()
            session.add(run)
            session.commit()


def run_of_plan(store: StateStore, plan_id: str) -> RunRecord | None:
    """The earliest run that applied the plan ``plan_id``, if any."""
    with store.session() as session:
        statement = select(RunRecord).where(RunRecord.plan_id == plan_id).order_by(RunRecord.started_at)  # type: ignore[arg-type]
        return session.exec(statement).first()


def entries(store: StateStore, run_id: str | None = None) -> list[JournalEntry]:
    """Journal entries, oldest first, optionally of one run."""
    with store.session() as session:
        statement = select(JournalEntry).order_by(JournalEntry.id)  # type: ignore[arg-type]
        if run_id:
            statement = statement.where(JournalEntry.run_id == run_id)
        return list(session.exec(statement))


def last_run(store: StateStore) -> RunRecord | None:
    """The most recent apply or reconcile run, or None."""
    with store.session() as session:
        return session.exec(select(RunRecord).order_by(RunRecord.started_at.desc())).first()  # type: ignore[attr-defined]


def run_statuses(store: StateStore) -> dict[str, str]:
    """Each run's status (running, succeeded, failed, interrupted), by run id."""
    with store.session() as session:
        return {run.run_id: run.status for run in session.exec(select(RunRecord))}


def runs(store: StateStore) -> dict[str, RunRecord]:
    """Every run (how it ended, and who ran it where: ``who`` is ``user@host``), by run id."""
    with store.session() as session:
        return {run.run_id: run for run in session.exec(select(RunRecord))}


def host_of(run: RunRecord | None) -> str | None:
    """The host a run ran on (from its ``user@host``), None when unknown."""
    return run.who.rpartition("@")[2] or None if run is not None else None

"""The report's history: a small table of figures each run records (bytes and files per origin and
replica, backups per database, free space per destination...), kept small by thinning.

Each row says when its figure was *measured*, which may be earlier than the run that recorded it
(a replica's inventory as of its last listing): the same figure recorded by two runs is kept once.

Retention: every figure of the last ``RECENT`` is kept; older ones are thinned to the newest
figure per address, metric and day; nothing older than ``OLDEST`` is kept. With a run every five
minutes and twenty figures per run that is at most about 12,000 recent rows and 8,000 daily ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select

from reconciler.engine.report import History, Measure
from reconciler.errors import ReconcilerError
from reconciler.state.store import StateStore
from reconciler.state.tables import MeasurementRecord

RECENT = timedelta(days=2)
OLDEST = timedelta(days=400)
TABLE = MeasurementRecord.__table__  # type: ignore[attr-defined]
log = logging.getLogger("reconciler.history")


def measure_all(kinds: list[Any], desired: Any, ctx: Any, failed: Iterable[str] = ()) -> list[Measure]:
    """Every kind's figures (``Kind.measure``), less those of the ``failed`` addresses (whose
    observation failed in this run: their figures would be old ones shown as new; ``kind:*``
    drops a whole kind). A kind whose figures cannot be read is skipped with a warning."""
    failed = set(failed)
    if ctx is not None:
        ctx.unobserved = frozenset(failed)
    found: list[Measure] = []
    for kind in kinds:
        if f"{kind.address_prefix}:*" in failed:
            continue
        try:
            found.extend(item for item in kind.measure(desired, ctx) if item.address not in failed)
        except (ReconcilerError, OSError) as error:
            log.warning("the figures of %s for the report's history could not be read: %s", kind.name, error)
    return found


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _aware(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record(store: StateStore, measures: Iterable[Measure], command: str, now: datetime | None = None) -> int:
    """Record ``measures`` (a figure already recorded with the same measuring time is skipped),
    then thin the table (see the module docstring). Returns how many rows were added.

    Raises StateError when the state database cannot be written.
    """
    now = _utc(now or datetime.now(UTC))
    rows = [{"address": item.address, "metric": item.metric, "value": float(item.value),
             "measured_at": _utc(item.measured_at), "recorded_at": now, "command": command,
             "day": _utc(item.measured_at).date().isoformat()} for item in measures]
    with store.session() as session:
        if rows:
            times = list({row["measured_at"] for row in rows})
            known = {(address, metric, _aware(at)) for address, metric, at in session.execute(
                select(TABLE.c.address, TABLE.c.metric, TABLE.c.measured_at).where(TABLE.c.measured_at.in_(times)))}
            rows = [row for row in rows if (row["address"], row["metric"], row["measured_at"]) not in known]
            if rows:
                session.execute(TABLE.insert(), rows)
        thin(session, now)
        session.commit()
    return len(rows)


def thin(session: object, now: datetime) -> None:
    """Drop figures older than OLDEST, and all but the newest per address, metric and day of those
    older than RECENT. Set-based: two statements whatever the table holds."""
    execute = session.execute  # type: ignore[attr-defined]
    execute(delete(TABLE).where(TABLE.c.measured_at < now - OLDEST))
    cutoff = now - RECENT
    newest = (select(func.max(TABLE.c.id)).where(TABLE.c.measured_at < cutoff)
              .group_by(TABLE.c.address, TABLE.c.metric, TABLE.c.day))
    execute(delete(TABLE).where(and_(TABLE.c.measured_at < cutoff, TABLE.c.id.not_in(newest.scalar_subquery()))))


def read_history(store: StateStore, prefix: str, metric: str) -> History:
    """``metric`` of every address ``prefix:…``, oldest first, one value per measuring time."""
    found: dict[str, dict[datetime, float]] = {}
    query = (select(TABLE.c.address, TABLE.c.measured_at, TABLE.c.value)
             .where(TABLE.c.metric == metric, TABLE.c.address >= f"{prefix}:", TABLE.c.address < f"{prefix};")
             .order_by(TABLE.c.measured_at, TABLE.c.id))
    with store.session() as session:
        for address, measured_at, value in session.execute(query):
            found.setdefault(address, {})[_aware(measured_at)] = float(value)
    return {address: sorted(values.items()) for address, values in sorted(found.items())}


def count(store: StateStore) -> int:
    """How many figures the table holds."""
    with store.session() as session:
        return int(session.execute(select(func.count()).select_from(TABLE)).scalar_one())

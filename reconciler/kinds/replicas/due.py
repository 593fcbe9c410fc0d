"""Every "is it due?" decision of the replicas observer, each made once, here.

A decision answers whether something is due now and, when it is not, when it falls due by
the clock alone. The observer calls these functions and records each answer in a
``Ledger``; the no-change memo (memo.py) is made from that ledger, never by deciding again:
a rule added here reaches the memo by construction, so a replay can never print "No
changes" while the full run would find something due.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Due:
    """``now``: due at this run; ``at``: when not, the moment it will be (None: not by the clock)."""

    now: bool
    at: datetime | None = None


def by_age(last: datetime | None, every: timedelta | None, now: datetime, forced: bool = False) -> Due:
    """Something done at ``last`` and due again ``every`` later: due when never done, when
    ``forced`` (--full-scan) or when ``every`` has passed; never due when ``every`` is None."""
    if every is None:
        return Due(False)
    if last is None or forced:
        return Due(True)
    at = last + every
    return Due(now >= at, at)


def full_scan(last_full_scan: datetime | None, every: timedelta, now: datetime) -> Due:
    """An origin's full scan (every directory read, whatever its mtime)."""
    return by_age(last_full_scan, every, now)


def verification(last_verify: datetime | None, every: timedelta | None, now: datetime, forced: bool) -> Due:
    """A replica listed in full and compared with its records: every ``verify_every``, and at
    every --full-scan whether or not ``verify_every`` is set (it promises to re-read everything:
    a copy deleted on the replica must not pass a full scan unseen)."""
    if forced:
        return Due(True)
    return by_age(last_verify, every, now)


def enrolment(import_origins: bool, last_verify: datetime | None, forced: bool, verify: Due) -> Due:
    """A replica with ``import_origins`` listed for files it holds that no record names: at its
    first observation, with --full-scan, and whenever it is verified."""
    if not import_origins:
        return Due(False)
    if last_verify is None or forced or verify.now:
        return Due(True)
    return Due(False, verify.at)


def scrub(oldest_verified: datetime | None, every: timedelta | None, now: datetime) -> Due:
    """The next copy to re-read: the one verified longest ago falls due ``every`` after that."""
    if every is None or oldest_verified is None:
        return Due(False)
    return Due(now >= oldest_verified + every, oldest_verified + every)


def pair_complete(complete_generation: int | None, generation: int) -> bool:
    """A (replica, origin) pair known to hold every file of the origin's current generation."""
    return complete_generation is not None and complete_generation == generation


@dataclass
class Ledger:
    """What one observation decided: the deadlines of what is not yet due, and why nothing can
    be replayed (something due now, or a premise the replay cannot check)."""

    deadlines: list[datetime] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)

    def decide(self, what: str, due: Due) -> bool:
        """Record ``due`` for ``what`` and return whether it is due now."""
        if due.now:
            self.unsettled.append(what)
        elif due.at is not None:
            self.deadlines.append(due.at)
        return due.now

    def unsettle(self, why: str) -> None:
        """A premise no replay could check (an ssh origin, a pair not complete...)."""
        self.unsettled.append(why)

    @property
    def valid_until(self) -> datetime | None:
        return min(self.deadlines) if self.deadlines else None

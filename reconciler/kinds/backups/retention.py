"""Retention with restic's ``forget`` semantics, as a pure function.

Rules are ORed: a backup is kept when any rule keeps it.

- ``keep_last = N``: the N newest backups.
- ``keep_hourly/daily/weekly/monthly/yearly = N``: going from the newest backup to
  the oldest, the first backup of each calendar period (hour, day, ISO week,
  month, year, in the backup time's own UTC offset) is kept, until N periods
  have been kept. ``-1`` means no limit.
- When such a rule still has count left when it reaches the oldest backup, the
  oldest backup is kept too ("oldest daily"...): the history kept is as long as
  the policy allows.
- ``keep_within = D``: every backup taken within D of the newest backup (strictly after).
- An empty policy keeps everything.

Each kept backup lists the rules that keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}
RULES = ("last", *PERIODS)


@dataclass(frozen=True)
class Policy:
    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: timedelta | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, rule) in (None, 0) for rule in RULES) and not self.within

    def count(self, rule: str) -> int:
        value = getattr(self, rule)
        return 0 if value is None else int(value)


@dataclass
class Decision:
    """Positions in the input, newest first: what is kept (with its reasons) and what is removed.
    Positions, not times, so that two backups taken at the same moment stay distinct."""

    keep: list[tuple[int, list[str]]] = field(default_factory=list)
    remove: list[int] = field(default_factory=list)


def parse_policy(text: str) -> Policy:
    """``"keep_daily=7,keep_weekly=4,keep_within=2d"`` -> Policy. Raises ValueError naming the bad part."""
    from reconciler.units import parse_duration

    values: dict[str, object] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, _, value = part.partition("=")
        name = key.strip().removeprefix("keep_")
        if name == "within":
            values["within"] = parse_duration(value.strip())
        elif name in RULES:
            try:
                values[name] = int(value)
            except ValueError:
                raise ValueError(f"{key}={value}: the count must be a whole number (-1 for no limit)") from None
        else:
            raise ValueError(f"unknown retention rule {key!r}; use keep_last, keep_hourly, keep_daily, keep_weekly, "
                             "keep_monthly, keep_yearly or keep_within")
    return Policy(**values)  # type: ignore[arg-type]


def decide(times: Sequence[datetime], policy: Policy) -> Decision:
    """Which backup times the policy keeps (with the rules keeping each) and which it removes.

    ``times`` must be timezone-aware. Backups with equal times keep their input
    order (the sort is stable, as restic's).
    """
    positions = sorted(range(len(times)), key=lambda index: times[index], reverse=True)
    ordered = [times[index] for index in positions]
    if policy.empty:
        return Decision(keep=[(index, ["no policy: keep all"]) for index in positions])
    reasons: list[list[str]] = [[] for _ in ordered]
    if policy.within:
        cutoff = ordered[0] - policy.within if ordered else None
        for index, time in enumerate(ordered):
            if cutoff is not None and time > cutoff:
                reasons[index].append(f"within {_duration_text(policy.within)}")
    for rule in RULES:
        remaining = policy.count(rule)
        if remaining == 0:
            continue
        period = PERIODS.get(rule)
        previous: object = None
        for index, time in enumerate(ordered):
            if remaining == 0:
                break
            key = index if period is None else period(time)
            oldest = index == len(ordered) - 1
            if key != previous:
                reasons[index].append(rule)
            elif oldest:
                reasons[index].append(f"oldest {rule}")
            else:
                continue
            previous = key
            if remaining > 0:
                remaining -= 1
    decision = Decision()
    for index, why in zip(positions, reasons, strict=True):
        if why:
            decision.keep.append((index, why))
        else:
            decision.remove.append(index)
    return decision


def _duration_text(value: timedelta) -> str:
    from reconciler.units import format_duration

    return format_duration(value)


def policy_of(retention: Any) -> Policy:
    """The policy a ``[databases.<name>.backup.retention]`` table (providers/mongo/config.py) declares."""
    return Policy(last=retention.keep_last, hourly=retention.keep_hourly, daily=retention.keep_daily,
                  weekly=retention.keep_weekly, monthly=retention.keep_monthly, yearly=retention.keep_yearly,
                  within=retention.keep_within)

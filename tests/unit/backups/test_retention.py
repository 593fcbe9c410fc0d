"""Retention: restic's forget rules, checked against a written-out transcription of restic's loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.kinds.backups.retention import Policy, decide, parse_policy


def reference(times, policy):
    """restic's ApplyPolicy, snapshot by snapshot (internal/data/snapshot_policy.go), written out plainly."""
    positions = sorted(range(len(times)), key=lambda index: times[index], reverse=True)  # stable, as sort.Stable
    ordered = [times[index] for index in positions]
    if policy.empty:
        return [(index, True) for index in positions]
    buckers = {
        "last": lambda t, nr: nr,
        "hourly": lambda t, nr: t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour,
        "daily": lambda t, nr: t.year * 10_000 + t.month * 100 + t.day,
        "weekly": lambda t, nr: t.isocalendar()[0] * 100 + t.isocalendar()[1],
        "monthly": lambda t, nr: t.year * 100 + t.month,
        "yearly": lambda t, nr: t.year,
    }
    buckets = [[policy.count(name), bucker, -1] for name, bucker in buckers.items()]
    latest = ordered[0] if ordered else None
    result = []
    for nr, cur in enumerate(ordered):
        keep = False
        if policy.within and cur > latest - policy.within:
            keep = True
        for bucket in buckets:
            if bucket[0] > 0 or bucket[0] == -1:
                value = bucket[1](cur, nr)
                if value != bucket[2] or nr == len(ordered) - 1:
                    keep = True
                    bucket[2] = value
                    if bucket[0] > 0:
                        bucket[0] -= 1
        result.append((positions[nr], keep))
    return result


zones = st.sampled_from([UTC, timezone(timedelta(hours=-10)), timezone(timedelta(hours=5, minutes=30))])
moments = st.builds(
    lambda seconds, zone: datetime(2019, 12, 20, tzinfo=UTC).astimezone(zone) + timedelta(seconds=seconds),
    st.integers(min_value=0, max_value=3 * 366 * 86400), zones,
)
counts = st.one_of(st.none(), st.integers(min_value=-1, max_value=6))
policies = st.builds(Policy, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts,
                     within=st.one_of(st.none(), st.integers(1, 400).map(lambda h: timedelta(hours=h))))


@settings(max_examples=400)
@given(st.lists(moments, max_size=60), policies)
def test_matches_restic(times, policy):
    decision = decide(times, policy)
    kept = {index for index, _ in decision.keep}
    expected = reference(times, policy)
    assert [(index, index in kept) for index, _ in expected] == expected
    assert [index for index, _ in decision.keep] == [index for index, keep in expected if keep]
    assert sorted(decision.remove) == sorted(index for index, keep in expected if not keep)


def test_iso_weeks_cross_year_boundaries():
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53; 2021-01-04 starts 2021-W01.
    times = [datetime(2020, 12, 31, tzinfo=UTC), datetime(2021, 1, 3, tzinfo=UTC),
             datetime(2021, 1, 4, tzinfo=UTC)]
    decision = decide(times, Policy(weekly=5))
    assert [times[i].date().isoformat() for i, _ in decision.keep] == ["2021-01-04", "2021-01-03", "2020-12-31"]
    assert [why for _, why in decision.keep] == [["weekly"], ["weekly"], ["oldest weekly"]]
    assert decide(times, Policy(weekly=2)).remove == [0]


def test_periods_follow_each_times_own_offset():
    late_in_hawaii = datetime(2026, 11, 20, 23, 30, tzinfo=timezone(timedelta(hours=-10)))  # 09:30 UTC the 21st
    morning_utc = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    decision = decide([late_in_hawaii, morning_utc], Policy(daily=2))
    assert [why for _, why in decision.keep] == [["daily"], ["daily"]]  # the 20th and the 21st: two days


def test_reasons_are_listed_per_backup():
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    times = [now - timedelta(days=day) for day in range(10)]
    decision = decide(times, parse_policy("keep_last=1,keep_daily=3,keep_within=2d"))
    assert decision.keep[0] == (0, ["within 2d", "last", "daily"])
    assert decision.keep[1][1] == ["within 2d", "daily"]
    assert len(decision.remove) == 7


def test_an_empty_policy_keeps_everything():
    times = [datetime(2026, 1, day, tzinfo=UTC) for day in range(1, 6)]
    assert decide(times, Policy()).remove == []


def test_backups_taken_at_the_same_moment_stay_distinct():
    moment = datetime(2026, 11, 21, tzinfo=UTC)
    assert decide([moment, moment], Policy(yearly=1)).keep == [(0, ["yearly"])]
    assert decide([moment, moment], Policy(yearly=1)).remove == [1]


@pytest.mark.parametrize("text,message", [("keep_dayly=7", "unknown retention rule"),
                                          ("keep_daily=seven", "whole number"),
                                          ("keep_within=2 days", "invalid duration")])
def test_bad_policies_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(text)


def test_ten_thousand_backups_match_restic():  # the speed is measured by benchmarks/retention.py
    start = datetime(2000, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=7 * index) for index in range(10_000)]
    policy = parse_policy("keep_last=3,keep_daily=7,keep_weekly=4,keep_monthly=12,keep_yearly=2")
    decision = decide(times, policy)
    assert [index for index, _ in decision.keep] == [index for index, keep in reference(times, policy) if keep]

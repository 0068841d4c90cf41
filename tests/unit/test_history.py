"""History: grouping the daily snapshots of a range into buckets, and their statistics."""

from __future__ import annotations

import random
import statistics
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastery.domain import (
    Component,
    DaySnapshot,
    Granularity,
    Trend,
    day_mastery,
    mastery_history,
)

TODAY = date(2026, 3, 4)  # a Wednesday
_score = st.none() | st.floats(0, 1, allow_nan=False)
_snapshot = st.builds(
    lambda back, scores: DaySnapshot(
        TODAY - timedelta(days=back), dict(zip(Component, scores, strict=True))
    ),
    st.integers(0, 95),
    st.tuples(_score, _score, _score, _score),
)
_history = st.lists(_snapshot, max_size=60, unique_by=lambda d: d.day)


def _key(day: date, granularity: Granularity) -> tuple[int, ...]:
    """The brute-force bucket key: the same day, ISO week, or calendar month."""
    if granularity is Granularity.WEEK:
        return tuple(day.isocalendar())[:2]
    if granularity is Granularity.MONTH:
        return (day.year, day.month)
    return (day.toordinal(),)


@given(_history, st.integers(7, 90), st.sampled_from(list(Granularity)))
def test_buckets_and_summary_match_brute_force(
    days: list[DaySnapshot], span: int, granularity: Granularity
) -> None:
    h = mastery_history(days, TODAY, span, granularity)
    first = TODAY - timedelta(days=span - 1)
    inside = [d for d in days if first <= d.day <= TODAY]
    groups: dict[tuple[int, ...], list[DaySnapshot]] = {}
    for d in sorted(inside, key=lambda d: d.day):
        groups.setdefault(_key(d.day, granularity), []).append(d)
    assert [b.days for b in h.buckets] == [len(g) for g in groups.values()]
    for bucket, group in zip(h.buckets, groups.values(), strict=True):
        assert first <= bucket.start <= group[0].day <= group[-1].day <= bucket.end <= TODAY
        assert bucket.mastery == pytest.approx(
            statistics.fmean(day_mastery(d) for d in group), abs=1e-4
        )
        for c in Component:
            seen = [s for d in group if (s := d.scores[c]) is not None]
            want = statistics.fmean(seen) if seen else None
            assert bucket.components[c] == pytest.approx(want, abs=1e-4)
    if not h.buckets:
        assert h.summary is None
        return
    values = [b.mastery for b in h.buckets]
    s = h.summary
    assert s is not None
    assert (s.count, s.min, s.max, s.first, s.last) == (
        len(values),
        min(values),
        max(values),
        values[0],
        values[-1],
    )
    assert s.mean == pytest.approx(statistics.fmean(values), abs=1e-4)
    assert s.stdev == pytest.approx(statistics.pstdev(values), abs=1e-4)
    assert s.change == pytest.approx(values[-1] - values[0], abs=1e-4)


@given(_history, st.randoms(use_true_random=False), st.sampled_from(list(Granularity)))
def test_the_order_of_the_days_does_not_matter(
    days: list[DaySnapshot], rnd: random.Random, granularity: Granularity
) -> None:
    shuffled = days[:]
    rnd.shuffle(shuffled)
    assert mastery_history(shuffled, TODAY, 90, granularity) == mastery_history(
        days, TODAY, 90, granularity
    )


def test_weeks_and_months_are_calendar_periods_clipped_to_the_range() -> None:
    days = [
        DaySnapshot(TODAY - timedelta(days=back), dict.fromkeys(Component, 0.5))
        for back in range(40)
    ]
    weeks = mastery_history(days, TODAY, 30, Granularity.WEEK).buckets
    assert weeks[0].start == TODAY - timedelta(days=29)  # mid-week: clipped
    assert all(b.start.weekday() == 0 for b in weeks[1:])
    assert (weeks[-1].start, weeks[-1].end, weeks[-1].days) == (date(2026, 3, 2), TODAY, 3)
    months = mastery_history(days, TODAY, 30, Granularity.MONTH).buckets
    assert [(b.start, b.end, b.days) for b in months] == [
        (date(2026, 2, 3), date(2026, 2, 28), 26),
        (date(2026, 3, 1), TODAY, 4),
    ]


def test_trend_is_fitted_over_the_days_whatever_the_granularity() -> None:
    days = [
        DaySnapshot(TODAY - timedelta(days=b), dict.fromkeys(Component, 0.8 - 0.01 * b))
        for b in range(30)
    ]
    for granularity in Granularity:
        h = mastery_history(days, TODAY, 30, granularity)
        assert h.trend is Trend.IMPROVING
        assert h.slope_per_day == pytest.approx(0.01)
    summary = mastery_history(days, TODAY, 30, Granularity.DAY).summary
    assert summary is not None
    assert summary.change == pytest.approx(0.29)


def test_no_days_in_range_gives_no_buckets_and_no_summary() -> None:
    old = DaySnapshot(TODAY - timedelta(days=60), dict.fromkeys(Component, 0.5))
    h = mastery_history([old], TODAY, 30, Granularity.DAY)
    assert (h.buckets, h.summary, h.trend, h.slope_per_day) == ((), None, Trend.STABLE, 0.0)

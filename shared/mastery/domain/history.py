"""Mastery history: the scores at the end of each active day of a date range, grouped by period."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from mastery.domain.model import Component
from mastery.domain.scoring import DEFAULT_MODEL, _shown
from mastery.domain.series import STABLE_SLOPE, Trend, day_mastery, fit_line, trend_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import date

    from mastery.domain.model import DaySnapshot
    from mastery.domain.scoring import ScoringModel

__all__ = ["Bucket", "Granularity", "History", "Summary", "mastery_history", "summarize"]

_COMPONENTS = tuple(Component)  # iterating the enum itself is slow in a hot loop


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"  # ISO weeks, Monday to Sunday
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period: the means of the days with data in it (``None``: component never observed).

    ``start``/``end`` are the period's first and last day within the range asked for.
    """

    start: date
    end: date
    days: int
    mastery: float
    components: Mapping[Component, float | None]


@dataclass(frozen=True, slots=True)
class Summary:
    """Statistics of the buckets' mastery; ``stdev`` is the population standard deviation."""

    count: int
    min: float
    max: float
    mean: float
    stdev: float
    first: float
    last: float
    change: float


@dataclass(frozen=True, slots=True)
class History:
    """``trend``/``slope_per_day`` come from a line through the daily values, whatever the
    granularity; ``summary`` is ``None`` when no day of the range has data."""

    start: date
    end: date
    granularity: Granularity
    buckets: tuple[Bucket, ...]
    summary: Summary | None
    trend: Trend
    slope_per_day: float


def mastery_history(
    days: Iterable[DaySnapshot],
    today: date,
    span_days: int,
    granularity: Granularity,
    model: ScoringModel = DEFAULT_MODEL,
) -> History:
    """The last ``span_days`` days up to ``today`` (inclusive), grouped by ``granularity``.

    Days without events have no snapshot (mastery stays what it was), so they make no
    bucket. The order of ``days`` does not matter.
    """
    ordered = sorted(days, key=lambda d: d.day)
    if ordered:
        today = max(today, ordered[-1].day)  # a producer's clock a little ahead
    start = today - timedelta(days=span_days - 1)
    inside = [(d, day_mastery(d, model)) for d in ordered if start <= d.day <= today]
    groups: dict[date, list[tuple[DaySnapshot, float]]] = {}
    for d, m in inside:
        groups.setdefault(_period(d.day, granularity), []).append((d, m))
    buckets = tuple(
        _bucket(max(p, start), min(_period_end(p, granularity), today), g)
        for p, g in groups.items()
    )
    slope = 0.0
    if len(inside) >= 2:
        slope = fit_line([(d.day - today).days for d, _ in inside], [m for _, m in inside]).slope
    return History(
        start=start,
        end=today,
        granularity=granularity,
        buckets=buckets,
        summary=summarize([b.mastery for b in buckets]) if buckets else None,
        trend=trend_of(slope, STABLE_SLOPE),
        slope_per_day=round(slope, 6),
    )


def summarize(values: Sequence[float]) -> Summary:
    """Summary statistics of a non-empty series, in its order."""
    n = len(values)
    mean = math.fsum(values) / n
    # Not statistics.pstdev: its exact rational arithmetic costs ~100 us for 90 values.
    stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
    return Summary(
        count=n,
        min=min(values),
        max=max(values),
        mean=_shown(mean),
        stdev=_shown(stdev),
        first=values[0],
        last=values[-1],
        change=_shown(values[-1] - values[0]),
    )


def _period(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    if granularity is Granularity.MONTH:
        return day.replace(day=1)
    return day


def _period_end(first: date, granularity: Granularity) -> date:
    if granularity is Granularity.WEEK:
        return first + timedelta(days=6)
    if granularity is Granularity.MONTH:
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        return following - timedelta(days=1)
    return first


def _bucket(start: date, end: date, days: list[tuple[DaySnapshot, float]]) -> Bucket:
    if len(days) == 1:  # every bucket, by day: no means to take
        ((day, mastery),) = days
        one = {c: day.scores.get(c) for c in _COMPONENTS}  # the day's own scores, as stored
        return Bucket(start, end, 1, _shown(mastery), one)
    components: dict[Component, float | None] = {}
    for c in _COMPONENTS:
        seen = [v for d, _ in days if (v := d.scores.get(c)) is not None]
        components[c] = _shown(math.fsum(seen) / len(seen)) if seen else None
    mastery = math.fsum(m for _, m in days) / len(days)
    return Bucket(start, end, len(days), _shown(mastery), components)

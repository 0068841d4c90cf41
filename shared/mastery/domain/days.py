"""Daily activity: what each day's events were, kept per component, folded into history.

A day record holds, per component, the number of events that happened on that day and the
sum of their scores in units of 1/10000. Integer sums commute, so the records are the same
whatever order the events arrive in (apply.lua adds the same integers this module does).
The component scores at the end of any day are folded from the records the way the state
is folded from events: the recency-weighted mean, half-life ``model.half_life``, every
event weighted at its day (not its hour: within a day the state's weights differ by at
most 5 % at a 14-day half-life).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from mastery.domain.model import Component, DaySnapshot
from mastery.domain.scoring import DECAY_ORIGIN, DEFAULT_MODEL, day_number

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from mastery.domain.model import Observation
    from mastery.domain.scoring import ScoringModel

__all__ = [
    "DAY_MAX",
    "UNITS",
    "DayActivity",
    "DayMean",
    "day_activity",
    "day_number",
    "end_of_day",
    "score_units",
]

#: Scores are summed as integers of 1/10000.
UNITS = 10000
#: A day record counts at most this many events of one component (16 bits): apply.lua
#: refuses a student's next one of that component and day (dead-lettered with the reason).
DAY_MAX = 65535
_ORIGIN = DECAY_ORIGIN.date()
_COMPONENTS = tuple(Component)


@dataclass(frozen=True, slots=True)
class DayMean:
    """One component's events of one day: how many, and their scores' sum in ``UNITS``."""

    count: int
    units: int

    @property
    def mean(self) -> float:
        return self.units / self.count / UNITS if self.count else 0.0


@dataclass(frozen=True, slots=True)
class DayActivity:
    """A student's events of one day, per component (components without events are absent)."""

    day: date
    events: Mapping[Component, DayMean]


def day_of(number: int) -> date:
    return _ORIGIN + timedelta(days=number)


def score_units(score: float) -> int:
    """An event's score as the integer the day records add up."""
    return math.floor(score * UNITS + 0.5)


def day_activity(observations: Iterable[Observation]) -> list[DayActivity]:
    """The day records of these events, oldest day first (the order of events is irrelevant)."""
    sums: dict[int, dict[Component, tuple[int, int]]] = {}
    for o in observations:
        day = sums.setdefault(day_number(o.occurred_at.timestamp()), {})
        n, u = day.get(o.component, (0, 0))
        day[o.component] = (n + 1, u + score_units(o.score))
    return [
        DayActivity(day_of(d), {c: DayMean(*v) for c, v in sorted(sums[d].items(), key=_order)})
        for d in sorted(sums)
    ]


def end_of_day(
    activity: Iterable[DayActivity], model: ScoringModel = DEFAULT_MODEL
) -> list[DaySnapshot]:
    """Each active day's component scores at its end (4 decimals, ``None``: unobserved yet)."""
    half_life = model.half_life / timedelta(days=1)
    sums = dict.fromkeys(_COMPONENTS, (0.0, 0.0))
    out: list[DaySnapshot] = []
    previous: date | None = None
    for a in sorted(activity, key=lambda a: a.day):
        if previous is not None:  # older days fade relative to this one
            fade = 2.0 ** (-(a.day - previous).days / half_life)
            sums = {c: (s * fade, w * fade) for c, (s, w) in sums.items()}
        for c, m in a.events.items():
            s, w = sums[c]
            sums[c] = (s + m.units / UNITS, w + m.count)
        previous = a.day
        scores = {
            c: (round(min(1.0, max(0.0, s / w)), 4) if w > 0 else None)
            for c, (s, w) in sums.items()
        }
        out.append(DaySnapshot(a.day, scores))
    return out


def _order(item: tuple[Component, object]) -> int:
    return _COMPONENTS.index(item[0])

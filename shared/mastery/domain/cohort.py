"""Cohort comparison: a student's scores next to their class's or school's.

The store keeps, per cohort, one sorted set per metric of integer *units* (score x 10000)
and the sum of each; this module defines those units and turns the few figures read
from them (size, rank counts, the middle values, the sum) into statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mastery.domain.model import Component

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mastery.domain.model import StudentState
    from mastery.domain.scoring import ScoringModel

__all__ = [
    "METRICS",
    "MIN_COHORT",
    "UNITS",
    "CohortComparison",
    "MetricComparison",
    "MetricFigures",
    "compare",
    "index_units",
    "percentile",
]

#: What a cohort is compared on: overall mastery, then each component.
METRICS: tuple[str, ...] = ("mastery", *(c.value for c in Component))
#: Scores are indexed as integers 0..UNITS so that sums stay exact.
UNITS = 10000
#: Below this many students a cohort reports no statistics: they would identify people.
MIN_COHORT = 5


def index_units(state: StudentState, model: ScoringModel) -> tuple[int, ...]:
    """The student's indexed values, in ``METRICS`` order (what ``apply.lua`` computes).

    A component's units are its score rounded to 1/10000 (0 when unobserved); mastery is
    the weighted sum of those, rounded, so that it agrees with the indexed components.
    """
    parts: list[int] = []
    mastery = 0.0
    for c in Component:
        agg = state.component(c)
        units = 0
        if agg.weight > 0:
            units = max(0, min(UNITS, math.floor(UNITS * agg.weighted_sum / agg.weight + 0.5)))
        parts.append(units)
        mastery = mastery + model.weights[c] * units
    return (math.floor(mastery + 0.5), *parts)


def percentile(below: int, equal: int, size: int) -> float:
    """Mid-rank percentile: the share of the cohort below, counting ties as half, in %."""
    return 100.0 * (below + 0.5 * equal) / size


@dataclass(frozen=True, slots=True)
class MetricFigures:
    """What the index answers for one metric, in units.

    ``below``/``equal``: cohort members strictly below / equal to the student;
    ``low_middle``/``high_middle``: the values at ranks (n-1)//2 and n//2.
    """

    student: int
    below: int
    equal: int
    low_middle: int
    high_middle: int
    total: int


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """The cohort's side of one metric."""

    mean: float
    median: float
    percentile: float  # the student's


@dataclass(frozen=True, slots=True)
class CohortComparison:
    """``metrics`` is ``None`` when the cohort is too small to report (``size < minimum``)."""

    size: int
    minimum: int
    student: Mapping[str, float]
    metrics: Mapping[str, MetricComparison] | None


def compare(
    size: int, figures: Sequence[MetricFigures], minimum: int = MIN_COHORT
) -> CohortComparison:
    """Statistics of a cohort of ``size`` students from its figures, one per ``METRICS``."""
    student = {metric: f.student / UNITS for metric, f in zip(METRICS, figures, strict=True)}
    if size < minimum:
        return CohortComparison(size, minimum, student, None)
    return CohortComparison(
        size,
        minimum,
        student,
        {
            metric: MetricComparison(
                mean=round(f.total / size / UNITS, 4),
                median=(f.low_middle + f.high_middle) / 2 / UNITS,
                percentile=round(percentile(f.below, f.equal, size), 1),
            )
            for metric, f in zip(METRICS, figures, strict=True)
        },
    )

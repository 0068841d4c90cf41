"""The cohort statistics of ``mastery.domain.cohort``, against brute force."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from mastery.domain import DEFAULT_MODEL, Aggregate, Component, StudentState
from mastery.domain.cohort import (
    METRICS,
    MIN_COHORT,
    UNITS,
    MetricFigures,
    compare,
    index_units,
    percentile,
)


def _figures(values: list[int], mine: int) -> MetricFigures:
    ordered = sorted(values)
    n = len(ordered)
    return MetricFigures(
        student=mine,
        below=sum(v < mine for v in values),
        equal=sum(v == mine for v in values),
        low_middle=ordered[(n - 1) // 2],
        high_middle=ordered[n // 2],
        total=sum(values),
    )


@given(st.lists(st.integers(0, UNITS), min_size=MIN_COHORT, max_size=60), st.data())
def test_statistics_are_the_brute_force_ones(values: list[int], data: st.DataObject) -> None:
    mine = data.draw(st.sampled_from(values))
    result = compare(len(values), [_figures(values, mine)] * len(METRICS))
    assert result.metrics is not None
    got = result.metrics["mastery"]
    assert got.median == statistics.median(values) / UNITS
    assert abs(got.mean - statistics.mean(values) / UNITS) <= 0.5e-4 + 1e-12
    assert 0 < got.percentile <= 100


def test_percentile_counts_ties_as_half() -> None:
    assert percentile(below=0, equal=1, size=1) == 50.0
    assert percentile(below=3, equal=2, size=10) == 40.0
    assert percentile(below=9, equal=1, size=10) == 95.0


def test_small_cohorts_report_nothing() -> None:
    figures = [_figures([5000] * 4, 5000)] * len(METRICS)
    result = compare(4, figures)
    assert (result.size, result.minimum, result.metrics) == (4, MIN_COHORT, None)
    assert result.student == dict.fromkeys(METRICS, 0.5)  # their own values, always


def test_index_units_round_each_component_then_weigh_them() -> None:
    state = StudentState(
        components={
            Component.COMPLETION: Aggregate(0.8, 1.0, 1),
            Component.QUIZ: Aggregate(1.0, 3.0, 2),  # 0.33333
        }
    )
    # mastery: 0.4 * 8000 + 0.3 * 3333 = 4199.9 -> 4200; unobserved components count 0
    assert index_units(state, DEFAULT_MODEL) == (4200, 8000, 3333, 0, 0)

"""Prediction: the least-squares line, the forecast built on it, and its flags (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mastery.domain import (
    DEFAULT_FORECAST,
    DEFAULT_MODEL,
    Component,
    DaySnapshot,
    Trend,
    fit_line,
    predict,
)

TODAY = date(2026, 3, 10)
_score = st.none() | st.floats(0, 1, allow_nan=False)
_snapshot = st.builds(
    lambda back, scores: DaySnapshot(
        TODAY - timedelta(days=back), dict(zip(Component, scores, strict=True))
    ),
    st.integers(-1, 89),
    st.tuples(_score, _score, _score, _score),
)
_history = st.lists(_snapshot, max_size=40, unique_by=lambda d: d.day)


def _line(slopes: dict[Component, float], start: float, days: range) -> list[DaySnapshot]:
    """Every component on an exact line, one snapshot a day ``days`` back from today."""
    return [
        DaySnapshot(TODAY - timedelta(days=back), {c: start - s * back for c, s in slopes.items()})
        for back in days
    ]


@given(
    st.lists(st.integers(-60, 60), min_size=2, max_size=30, unique=True),
    st.floats(-0.05, 0.05),
    st.floats(-1, 1),
)
def test_fit_line_recovers_a_perfect_line(xs: list[int], slope: float, intercept: float) -> None:
    fit = fit_line(xs, [intercept + slope * x for x in xs])
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.intercept == pytest.approx(intercept, abs=1e-9)
    assert fit.rmse == pytest.approx(0, abs=1e-9)
    assert fit.n == len(xs)


def test_fit_line_of_one_point_is_flat_and_empty_is_refused() -> None:
    fit = fit_line([3], [0.4])
    assert (fit.slope, fit.at(10), fit.evidence) == (0.0, 0.4, 0.0)
    with pytest.raises(ValueError, match="xs and ys"):
        fit_line([], [])


@given(_history)
def test_prediction_and_confidence_stay_in_range(days: list[DaySnapshot]) -> None:
    p = predict(days, TODAY)
    assert 0.0 <= p.predicted <= 1.0
    assert 0.0 <= p.confidence <= 1.0
    assert p.days_with_data <= DEFAULT_FORECAST.window_days
    if p.intervention_needed:
        assert p.confidence >= DEFAULT_FORECAST.min_confidence


@given(_history, st.randoms(use_true_random=False))
def test_the_order_of_the_days_does_not_matter(days: list[DaySnapshot], rnd: random.Random) -> None:
    shuffled = days[:]
    rnd.shuffle(shuffled)
    assert predict(shuffled, TODAY) == predict(days, TODAY)


@given(
    st.floats(-0.02, 0.02),
    st.floats(0.2, 0.8),
    st.integers(14, 30),
)
def test_a_perfect_line_is_extrapolated_exactly(slope: float, start: float, n: int) -> None:
    assume(0 <= start - slope * (n - 1) <= 1)  # scores are in [0, 1]
    assume(abs(abs(slope) - 0.005) > 1e-6)  # float error decides right at the threshold
    days = _line(dict.fromkeys(Component, slope), start, range(n))
    full = replace(DEFAULT_FORECAST, damping=1.0)
    p = predict(days, TODAY, forecast=full)
    assert p.slope_per_day == pytest.approx(slope, abs=1e-6)
    assert p.predicted == pytest.approx(min(1, max(0, start + 7 * slope)), abs=2e-4)
    assert p.confidence == pytest.approx(1.0, abs=1e-3)  # n >= full_days and no residual
    assert p.history_from == TODAY - timedelta(days=n - 1)
    assert p.history_to == TODAY
    assert p.trend is (
        Trend.IMPROVING if slope > 0.005 else Trend.DECLINING if slope < -0.005 else Trend.STABLE
    )


def test_the_default_carries_half_of_a_clear_slope_from_the_newest_score() -> None:
    p = predict(_line(dict.fromkeys(Component, 0.01), 0.5, range(20)), TODAY)
    assert p.predicted == pytest.approx(0.5 + 0.5 * 7 * 0.01, abs=1e-4)
    assert p.current == pytest.approx(0.5)


def test_a_new_component_is_not_a_trend() -> None:
    quiz_only = {c: (0.6 if c is Component.QUIZ else None) for c in Component}
    both = {**quiz_only, Component.COMPLETION: 0.6}
    days = [DaySnapshot(TODAY - timedelta(days=b), quiz_only) for b in range(10, 20)]
    days += [DaySnapshot(TODAY - timedelta(days=b), both) for b in range(10)]
    p = predict(days, TODAY)
    assert p.slope_per_day == 0
    assert p.trend is Trend.STABLE
    assert p.predicted == pytest.approx(p.current)  # 0.4 * 0.6 + 0.3 * 0.6


def test_no_recent_data_keeps_the_last_score_with_no_confidence() -> None:
    old = DaySnapshot(TODAY - timedelta(days=45), dict.fromkeys(Component, 0.3))
    p = predict([old], TODAY)
    assert (p.predicted, p.current, p.confidence, p.days_with_data) == (0.3, 0.3, 0.0, 0)
    assert p.history_from is None
    assert not p.intervention_needed
    empty = predict([], TODAY)
    assert (empty.predicted, empty.confidence, empty.horizon) == (0.0, 0.0, TODAY + timedelta(7))


def test_a_steep_confident_decline_is_flagged_with_its_reasons() -> None:
    p = predict(_line(dict.fromkeys(Component, -0.02), 0.45, range(21)), TODAY)
    assert p.trend is Trend.DECLINING
    assert p.confidence >= 0.7
    assert p.intervention_reason is not None
    assert "falling 0.020 a day" in p.intervention_reason
    assert "below 0.40" in p.intervention_reason


def test_a_low_but_uncertain_prediction_is_not_flagged() -> None:
    rng = random.Random(3)
    days = [
        DaySnapshot(TODAY - timedelta(days=b), {c: rng.uniform(0, 0.6) for c in Component})
        for b in range(0, 30, 3)
    ]
    p = predict(days, TODAY)
    assert p.predicted < 0.40
    assert p.confidence < 0.7
    assert not p.intervention_needed


def test_a_snapshot_after_today_moves_today_forward() -> None:
    ahead = DaySnapshot(TODAY + timedelta(days=1), dict.fromkeys(Component, 0.5))
    p = predict([ahead], TODAY, DEFAULT_MODEL)
    assert p.history_to == TODAY + timedelta(days=1)
    assert p.horizon == TODAY + timedelta(days=8)

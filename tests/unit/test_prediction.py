"""Prediction: the decayed mean with the expected events added, its trend, confidence and
flags (pure, no I/O)."""

from __future__ import annotations

import random
import statistics
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastery.domain import (
    DEFAULT_FORECAST,
    DEFAULT_MODEL,
    Component,
    DayActivity,
    DayMean,
    Forecast,
    Trend,
    end_of_day,
    fit_line,
    predict,
)

TODAY = date(2026, 3, 10)
_mean = st.none() | st.tuples(st.integers(1, 5), st.floats(0, 1, allow_nan=False))
_record = st.builds(
    lambda back, means: DayActivity(
        TODAY - timedelta(days=back),
        {
            c: DayMean(n, round(n * v * 10000))
            for c, m in zip(Component, means, strict=True)
            if m is not None
            for n, v in [m]
        },
    ),
    st.integers(-1, 89),
    st.tuples(_mean, _mean, _mean, _mean),
)
_history = st.lists(_record, max_size=40, unique_by=lambda d: d.day)


def _days(score: object, days: range, n: int = 2) -> list[DayActivity]:
    """Every component's events of each day ``back`` days ago scoring ``score(back)``."""
    return [
        DayActivity(
            TODAY - timedelta(days=back),
            {c: DayMean(n, round(n * score(back) * 10000)) for c in Component},  # type: ignore[operator]
        )
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
def test_prediction_and_confidence_stay_in_range(days: list[DayActivity]) -> None:
    p = predict(days, TODAY)
    assert 0.0 <= p.predicted <= 1.0
    assert 0.0 <= p.confidence <= 1.0
    assert p.days_with_data == len({d.day for d in days})  # every stored day is read
    if p.intervention_needed:
        assert p.confidence >= DEFAULT_FORECAST.min_confidence


@given(_history, st.randoms(use_true_random=False))
def test_the_order_of_the_days_does_not_matter(days: list[DayActivity], rnd: random.Random) -> None:
    shuffled = days[:]
    rnd.shuffle(shuffled)
    assert predict(shuffled, TODAY) == predict(days, TODAY)


@given(_history)
def test_current_is_the_end_of_today_the_history_shows(days: list[DayActivity]) -> None:
    p = predict(days, TODAY)
    shown = end_of_day(d for d in days if d.day <= max([TODAY, *(d.day for d in days)]))
    if shown:
        last = shown[-1].scores
        expected = sum(DEFAULT_MODEL.weights[c] * (v or 0.0) for c, v in last.items())
        assert p.current == pytest.approx(expected, abs=2e-4)


def test_a_steady_student_stays_where_they_are() -> None:
    p = predict(_days(lambda _: 0.7, range(30)), TODAY)
    assert p.current == pytest.approx(0.7)
    assert p.predicted == pytest.approx(0.7)
    assert p.trend is Trend.STABLE
    assert p.confidence >= 0.9
    assert not p.intervention_needed


def test_a_student_past_their_peak_is_forecast_to_fall() -> None:
    """Scores rose for three weeks and have fallen for two: the mean still lags above them."""
    days = _days(lambda b: 0.3 + 0.02 * (35 - b) if b >= 14 else 0.72 - 0.025 * (14 - b), range(36))
    p = predict(days, TODAY)
    assert p.predicted < p.current - 0.02
    assert p.trend is Trend.DECLINING
    assert p.slope_per_day < 0


def test_a_sudden_drop_is_flagged_with_the_signal_that_fired() -> None:
    p = predict(_days(lambda b: 0.85 if b >= 6 else 0.45, range(30)), TODAY)
    assert p.trend is Trend.DECLINING
    assert p.predicted > 0.5
    assert p.intervention_reason is not None
    assert p.intervention_reason.startswith("expected to fall")
    assert "below" not in p.intervention_reason.split("(")[0]


def test_recent_scores_below_the_mean_are_forecast_to_pull_it_down() -> None:
    p = predict(_days(lambda b: 0.5 if b < 5 else 0.7, range(30)), TODAY)
    assert p.predicted < p.current - 0.02
    assert p.trend is Trend.DECLINING


def test_without_events_ahead_the_forecast_is_the_decayed_sums_as_they_are() -> None:
    """No events lately: none are expected, and faded sums keep their ratio."""
    days = _days(lambda b: 0.4 + 0.01 * b, range(15, 27))
    p = predict(days, TODAY)
    assert p.days_with_data == 12
    assert p.predicted == p.current
    assert p.trend is Trend.STABLE


def test_a_silent_student_is_not_expected_to_start_another_component() -> None:
    """Quizzes 60 to 41 days ago, nothing since: no component is expected to begin either
    (it read 'improving', as if the three unpractised ones were about to be taken up)."""
    days = [
        DayActivity(TODAY - timedelta(days=back), {Component.QUIZ: DayMean(1, 9000)})
        for back in range(41, 61)
    ]
    p = predict(days, TODAY)
    assert p.predicted == p.current
    assert p.trend is Trend.STABLE


def test_a_rising_student_is_forecast_to_rise() -> None:
    p = predict(_days(lambda b: 0.3 + 0.015 * (30 - b), range(31)), TODAY)
    assert p.predicted > p.current + 0.03
    assert p.trend is Trend.IMPROVING
    assert not p.intervention_needed


def test_a_low_forecast_is_flagged_with_its_reason() -> None:
    p = predict(_days(lambda _: 0.3, range(20)), TODAY)
    assert p.intervention_reason is not None
    assert "forecast mastery 0.30 is below 0.4" in p.intervention_reason


def test_a_component_without_events_lately_does_not_move() -> None:
    days = [DayActivity(TODAY - timedelta(days=40), {Component.QUALITY: DayMean(3, 15000)})]
    days += _days(lambda _: 0.6, range(10))
    days = [
        DayActivity(d.day, {c: m for c, m in d.events.items() if c is not Component.QUALITY})
        if d.day > TODAY - timedelta(days=40)
        else d
        for d in days
    ]
    p = predict(days, TODAY)
    assert p.predicted == pytest.approx(p.current)


def _without(c: Component, days: list[DayActivity]) -> list[DayActivity]:
    return [DayActivity(d.day, {k: m for k, m in d.events.items() if k is not c}) for d in days]


def test_a_component_not_yet_practised_is_expected_to_arrive_where_the_others_stand() -> None:
    """Mastery counts a component without events as 0: a student practising daily on the
    other three will likely start it, scoring near their level, so the forecast rises by
    part of its weight times that level (not all: it may be one they skip)."""
    days = _without(Component.QUALITY, _days(lambda _: 0.6, range(10), n=1))
    p = predict(days, TODAY)
    assert p.current == pytest.approx(0.8 * 0.6)
    assert p.current + 0.02 < p.predicted < p.current + 0.2 * 0.6
    assert p.trend is Trend.IMPROVING


def test_a_component_a_busy_student_never_touched_is_less_expected_than_a_new_students() -> None:
    """The same three components at the same level: after 30 days of daily practice the
    fourth is likely skipped on purpose; after 3 days it is likely still to come."""
    new = predict(_without(Component.QUALITY, _days(lambda _: 0.6, range(3))), TODAY)
    busy = predict(_without(Component.QUALITY, _days(lambda _: 0.6, range(30))), TODAY)
    assert new.predicted - new.current > 2 * (busy.predicted - busy.current) > 0


def test_noisier_scores_give_lower_confidence() -> None:
    rng = random.Random(3)
    calm = predict(_days(lambda _: 0.6 + rng.gauss(0, 0.02), range(21)), TODAY)
    noisy = predict(_days(lambda _: 0.6 + rng.gauss(0, 0.2), range(0, 21, 3), n=1), TODAY)
    assert calm.confidence > noisy.confidence


def test_fewer_events_give_lower_confidence() -> None:
    """Events as noisy, a quarter as many a day: a larger predicted error."""
    rng = random.Random(5)
    z = [rng.gauss(0, 1) for _ in range(21)]  # a day mean of n events scatters by sd / √n
    many = predict(_days(lambda b: 0.6 + 0.05 * z[b], range(21), n=4), TODAY)
    few = predict(_days(lambda b: 0.6 + 0.1 * z[b], range(21), n=1), TODAY)
    assert many.confidence > few.confidence


def test_no_recent_data_keeps_the_last_score_with_no_confidence() -> None:
    old = DayActivity(TODAY - timedelta(days=45), dict.fromkeys(Component, DayMean(1, 3000)))
    p = predict([old], TODAY)
    assert (p.predicted, p.current, p.confidence, p.days_with_data) == (0.3, 0.3, 0.0, 1)
    assert p.history_from == p.history_to == old.day  # what it was read from, if long ago
    assert not p.intervention_needed
    empty = predict([], TODAY)
    assert (empty.predicted, empty.confidence, empty.horizon) == (0.0, 0.0, TODAY + timedelta(7))
    assert (empty.days_with_data, empty.history_from) == (0, None)


def test_a_record_after_today_moves_today_forward() -> None:
    ahead = DayActivity(TODAY + timedelta(days=1), dict.fromkeys(Component, DayMean(1, 5000)))
    p = predict([ahead], TODAY, DEFAULT_MODEL)
    assert p.history_to == TODAY + timedelta(days=1)
    assert p.horizon == TODAY + timedelta(days=8)


def test_a_noisy_flat_student_is_forecast_near_where_they_are() -> None:
    """A flat skill under heavy event noise (sd 0.3): where recent scores stand is noise,
    so the forecast stays near the current mastery (the trend stable), and where it moves
    it moves, on the whole, towards the skill's true level (the mean of a clipped score,
    which the coming events revert the mastery to), not after the noise."""
    true_level = statistics.fmean(
        min(1.0, max(0.0, statistics.NormalDist(0.6, 0.3).inv_cdf((i + 0.5) / 10_000)))
        for i in range(10_000)
    )
    closer = []
    for seed in range(20):
        rng = random.Random(seed)
        days = [
            DayActivity(
                TODAY - timedelta(days=back),
                {
                    c: DayMean(1, round(min(1.0, max(0.0, 0.6 + rng.gauss(0, 0.3))) * 10000))
                    for c in rng.sample(list(Component), rng.randint(1, 3))
                },
            )
            for back in range(28)
            if rng.random() < 0.5
        ]
        p = predict(days, TODAY)
        assert p.trend is Trend.STABLE
        assert abs(p.predicted - p.current) <= 0.01
        closer.append(abs(p.current - true_level) - abs(p.predicted - true_level))
    assert statistics.fmean(closer) > 0


def test_the_scatter_of_day_means_estimates_one_events_sd() -> None:
    """Successive day means of n events differ by sd² (1/n1 + 1/n2) on average: the
    estimate is one event's sd, not sd/√2."""
    from mastery.domain.prediction import _scatter

    rng = random.Random(11)
    points = []
    for x in range(2000):
        n = rng.randint(1, 4)
        points.append((x, n, 0.5 + sum(rng.gauss(0, 0.2) for _ in range(n)) / n))
    assert _scatter([points]) == pytest.approx(0.2, rel=0.05)


def test_component_offsets_come_from_same_day_contrasts_whatever_the_trend() -> None:
    """Quiz scores stand 0.1 above completion and quality 0.05 below it, on a skill
    rising 0.01 a day with a different mix of components each day: the offsets' contrasts
    are exact (a trend does not leak in), and with a weak prior they sum to about none."""
    from mastery.domain.prediction import _offsets

    true = {Component.COMPLETION: 0.0, Component.QUIZ: 0.1, Component.QUALITY: -0.05}
    mixes = [(Component.COMPLETION, Component.QUIZ), (Component.QUIZ, Component.QUALITY)]
    mixes.append((Component.COMPLETION, Component.QUALITY, Component.QUIZ))
    days = [[(c, 1 + x % 2, 0.4 + 0.01 * x + true[c]) for c in mixes[x % 3]] for x in range(-20, 1)]
    points = {c: [(0, 1, 0.5)] for c in true}
    got = _offsets(points, days, 0.01, Forecast(offset_prior=10.0))
    off = {c: o for c, (o, _) in got.items()}
    assert off[Component.QUIZ] - off[Component.COMPLETION] == pytest.approx(0.1, abs=1e-5)
    assert off[Component.QUALITY] - off[Component.COMPLETION] == pytest.approx(-0.05, abs=1e-5)
    assert sum(off.values()) == pytest.approx(0.0, abs=1e-3)
    assert all(0 < var < 0.01 for _, var in got.values())


def test_a_clearly_declining_student_is_declining_and_flagged_with_the_signal() -> None:
    """Scores falling 0.03 a day for two weeks on every component: the forecast falls,
    the trend says so, and the flag names the fall (the forecast is still above 0.4)."""
    p = predict(_days(lambda b: 0.9 if b >= 14 else 0.9 - 0.03 * (14 - b), range(30)), TODAY)
    assert p.trend is Trend.DECLINING
    assert p.predicted < p.current - 0.03
    assert p.predicted > DEFAULT_FORECAST.flag_below
    assert p.intervention_reason is not None
    assert p.intervention_reason.startswith("expected to fall")


def test_the_agents_are_told_the_flags_the_model_raises() -> None:
    """predict_next_week's description states the margins and floors the forecast uses
    (it said 2 and 2.25 times after they were re-chosen as 1.0 and 0.75)."""
    from mastery.mcp.tools import TOOLS

    text = TOOLS["predict_next_week"].description
    f = DEFAULT_FORECAST
    assert f"below {f.flag_below:.2f} by {f.below_margin:g} times its uncertainty" in text
    assert f"{f.flag_drop:g} or more in the week by {f.drop_margin:g} times its own" in text
    assert f"confidence >= {f.min_confidence:g}" in text

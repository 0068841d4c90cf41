"""Next week's mastery: the decayed mean with the events the student will likely produce.

Mastery is a recency-weighted mean, so next week's value is this week's sums, faded by a
week, plus next week's events. Those are not known; per component they are expected at the
student's own recent event rate, each scoring where the student's recent raw scores stand
and are heading (a recency-weighted line through each day's own event mean, not through the
mean itself: the mean lags, and keeps rising for a while after a student's real peak).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from mastery.domain.days import UNITS
from mastery.domain.model import Component
from mastery.domain.scoring import DEFAULT_MODEL, _shown
from mastery.domain.series import trend_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import date

    from mastery.domain.days import DayActivity, DayMean
    from mastery.domain.scoring import ScoringModel
    from mastery.domain.series import Trend

__all__ = ["DEFAULT_FORECAST", "Forecast", "Prediction", "predict"]


@dataclass(frozen=True, slots=True)
class Forecast:
    """How predictions are made; the values were chosen by ``bench backtest`` on its tuning seed.

    Attributes:
        window_days: the raw scores and event rate of the last this many days are used.
        horizon_days: how far ahead the prediction is.
        recency_days: raw scores this many days old count half as much in the line.
        line_days: the line through the raw scores is fitted over the last this many days.
        rate_days: the event rate is that of the last this many days.
        level_noise: how many times its own variance the raw level must stand off the
            mean (squared) to be taken at half its distance.
        damping: share of the raw scores' slope carried into next week.
        commitment: share of the expected move (towards the new events) forecast.
        stable_slope: forecast change per day below which the trend is stable.
        flag_below: a forecast below this needs an intervention.
        flag_drop: a forecast fall of at least this over the horizon needs one.
        min_confidence: interventions are only flagged at this confidence or above.
        idle_sd: uncertainty of a component without recent events (the student may
            come back to it, where they stand now, or not).
        error_scale: the forecast's standard error at which confidence is one half.
    """

    window_days: int = 28
    horizon_days: int = 7
    recency_days: float = 7.0
    rate_days: int = 14
    line_days: int = 28
    level_noise: float = 2.0
    commitment: float = 0.85
    damping: float = 0.5
    stable_slope: float = 0.002
    flag_below: float = 0.375
    flag_drop: float = 0.06
    min_confidence: float = 0.2
    error_scale: float = 0.03
    idle_sd: float = 0.05


DEFAULT_FORECAST = Forecast()


@dataclass(frozen=True, slots=True)
class Prediction:
    """Mastery ``horizon`` days ahead, and what it was predicted from.

    ``history_from``/``history_to`` are the first and last days with events in the window
    (``None`` when there were none); ``current`` is mastery at the end of ``today`` as the
    day records fold it; ``slope_per_day`` is the forecast change over the horizon, a day.
    """

    predicted: float
    current: float
    slope_per_day: float
    trend: Trend
    confidence: float
    intervention_reason: str | None
    days_with_data: int
    history_from: date | None
    history_to: date | None
    horizon: date

    @property
    def intervention_needed(self) -> bool:
        return self.intervention_reason is not None


@dataclass(frozen=True, slots=True)
class _Outlook:
    now: float  # the component's score at the end of today
    then: float  # expected at the horizon
    variance: float  # of ``then``
    expected: float  # mean score of the expected new events


def predict(
    days: Iterable[DayActivity],
    today: date,
    model: ScoringModel = DEFAULT_MODEL,
    forecast: Forecast = DEFAULT_FORECAST,
) -> Prediction:
    """Predict mastery ``forecast.horizon_days`` after ``today`` from the day records.

    The order of ``days`` does not matter; a record dated after ``today`` (a producer's
    clock a little ahead) moves ``today`` forward to it.
    """
    f = forecast
    ordered = sorted(days, key=lambda d: d.day)
    if ordered:
        today = max(today, ordered[-1].day)
    start = today - timedelta(days=f.window_days - 1)
    recent = [d for d in ordered if d.day >= start]
    horizon = today + timedelta(days=f.horizon_days)
    half_life = model.half_life / timedelta(days=1)
    first_day = ordered[0].day if ordered else today
    current = predicted = variance = 0.0
    falling = 0.0
    for c in Component:
        o = _outlook(c, ordered, recent, today, first_day, half_life, f)
        weight = model.weights[c]
        current += weight * o.now
        predicted += weight * o.then
        variance += weight**2 * o.variance
        falling += weight * min(0.0, o.expected - o.now)
    error = math.sqrt(variance)
    confidence = 1.0 / (1.0 + (error / f.error_scale) ** 2) if recent else 0.0
    change = predicted - current
    return Prediction(
        predicted=_shown(predicted),
        current=_shown(current),
        slope_per_day=round(change / f.horizon_days, 6),
        trend=trend_of(change / f.horizon_days, f.stable_slope),
        confidence=round(confidence, 3),
        intervention_reason=_reason(predicted, change, falling, confidence, f) if recent else None,
        days_with_data=len(recent),
        history_from=recent[0].day if recent else None,
        history_to=recent[-1].day if recent else None,
        horizon=horizon,
    )


def _outlook(
    c: Component,
    ordered: Sequence[DayActivity],
    recent: Sequence[DayActivity],
    today: date,
    first_day: date,
    half_life: float,
    f: Forecast,
) -> _Outlook:
    s = w = 0.0  # the decayed sums at the end of today (today's events weigh 1)
    for d in ordered:
        if (m := d.events.get(c)) is not None:
            fade = 2.0 ** ((d.day - today).days / half_life)
            s += fade * m.units / UNITS
            w += fade * m.count
    if w <= 0:
        return _Outlook(0.0, 0.0, 0.0, 0.0)
    now = min(1.0, max(0.0, s / w))
    points = [((d.day - today).days, m) for d in recent if (m := d.events.get(c)) is not None]
    if not points:  # no events lately: none expected, the score stays where it is
        return _Outlook(now, now, f.idle_sd**2, now)
    rate_start = max(first_day, today - timedelta(days=f.rate_days - 1))
    rate = sum(m.count for x, m in points if x > -f.rate_days) / ((today - rate_start).days + 1)
    if rate <= 0:  # lately nothing: none expected, unless the student comes back
        return _Outlook(now, now, f.idle_sd**2, now)
    line = [(x, m) for x, m in points if x > -f.line_days] or points[-1:]
    level, slope, noise, spread, evidence = _raw_line(line, f.recency_days)
    # Where the raw scores stand moves the forecast only as far as it stands out of their
    # noise: a plateau's recent scores scatter around the mean, a turn's stay off it.
    gap2 = (level - now) ** 2
    level = now + (level - now) * gap2 / (gap2 + f.level_noise * spread) if gap2 > 0 else now
    slope *= f.damping * evidence
    h = f.horizon_days
    fut_s = fut_w = 0.0
    for k in range(1, h + 1):
        fade = 2.0 ** (-(h - k) / half_life)
        fut_s += fade * rate * min(1.0, max(0.0, level + slope * k))
        fut_w += fade * rate
    old = 2.0 ** (-h / half_life)
    # A component may get no events at all next week (then it stays put): the forecast
    # that errs least (the median) lies between that and the expected mean.
    then = now + f.commitment * ((s * old + fut_s) / (w * old + fut_w) - now)
    expected = fut_s / fut_w
    share = fut_w / (w * old + fut_w)  # of the horizon's mean that is still to come
    events_ahead = max(1.0, rate * h)
    # the new events' own noise, where their level stands, and whether they come at all
    var_new = noise**2 / events_ahead + spread + (0.5 * (expected - now)) ** 2 * (1.0 - share)
    return _Outlook(now, min(1.0, max(0.0, then)), share**2 * var_new, expected)


def _raw_line(
    points: Sequence[tuple[int, DayMean]], recency_days: float
) -> tuple[float, float, float, float, float]:
    """Level at today and slope of the raw day means (weighted by events and recency),
    the events' scatter around it, the variance of the level, and how clearly the slope
    stands out of the noise (``t² / (1 + t²)``)."""
    xs, ys, ws = [], [], []
    for x, m in points:
        count, units = m.count, m.units
        xs.append(float(x))
        ys.append(units / count / UNITS)
        ws.append(count * 2.0 ** (x / recency_days))
    total = math.fsum(ws)
    mx = math.fsum(w * x for w, x in zip(ws, xs, strict=True)) / total
    my = math.fsum(w * y for w, y in zip(ws, ys, strict=True)) / total
    sxx = math.fsum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
    sxy = math.fsum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True))
    n = len(xs)
    slope = sxy / sxx if n >= 3 and sxx > 0 else 0.0
    fitted = my - slope * mx
    sse = math.fsum(w * (y - fitted - slope * x) ** 2 for w, x, y in zip(ws, xs, ys, strict=True))
    # A day mean averages its events; with few days, assume a typical scatter.
    noise = math.sqrt(sse / total * n / max(1, n - 2)) if n >= 3 else 0.15
    effective = total**2 / math.fsum(w * w for w in ws)
    slope_var = noise**2 / sxx if sxx > 0 and n >= 3 else 0.0
    spread = noise**2 / effective + slope_var * mx**2
    t2 = slope**2 / slope_var if slope_var > 0 else 0.0
    evidence = t2 / (1.0 + t2)
    # A slope that noise could explain moves the level at today only as much as it is clear.
    return my - evidence * slope * mx, slope, noise, spread, evidence


def _reason(
    predicted: float, change: float, falling: float, confidence: float, f: Forecast
) -> str | None:
    if confidence < f.min_confidence:
        return None
    reasons = []
    if predicted < f.flag_below:
        reasons.append(f"forecast mastery {predicted:.2f} is below {f.flag_below:g}")
    if change <= -f.flag_drop:
        reasons.append(
            f"forecast to fall {-change:.2f} in {f.horizon_days} days "
            f"(recent scores {-falling:.2f} below the mean)"
        )
    return "; ".join(reasons) or None

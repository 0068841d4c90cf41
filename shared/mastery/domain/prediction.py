"""Next week's mastery from the daily snapshots: a least-squares line, its trend and confidence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from mastery.domain.model import Component
from mastery.domain.scoring import DEFAULT_MODEL, _shown
from mastery.domain.series import STABLE_SLOPE, day_mastery, fit_line, trend_of

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import date

    from mastery.domain.model import DaySnapshot
    from mastery.domain.scoring import ScoringModel
    from mastery.domain.series import Trend

__all__ = ["DEFAULT_FORECAST", "Forecast", "Prediction", "predict"]


@dataclass(frozen=True, slots=True)
class Forecast:
    """How predictions are made: DESIGN.md's defaults, the rest chosen by ``bench backtest``.

    Attributes:
        window_days: snapshots of the last this many days (today included) are fitted.
        horizon_days: how far ahead the prediction is.
        stable_slope: |slope| per day below which the trend is stable.
        steep_slope: a decline at least this fast (per day) needs an intervention.
        flag_below: a predicted mastery below this needs an intervention.
        min_confidence: interventions are only flagged at this confidence or above.
        full_days: days with data that give full confidence from volume.
        rmse_scale: the fit's residual (mastery units) at which confidence from fit halves.
        damping: share of the fitted slope carried over the horizon.
        shrink: also scale each slope by its evidence (``LineFit.evidence``), so a
            slope that noise could explain is carried forward less.
    """

    window_days: int = 30
    horizon_days: int = 7
    stable_slope: float = STABLE_SLOPE
    steep_slope: float = 0.01
    flag_below: float = 0.40
    min_confidence: float = 0.7
    full_days: int = 14
    rmse_scale: float = 0.03
    damping: float = 0.5
    shrink: bool = True


DEFAULT_FORECAST = Forecast()


@dataclass(frozen=True, slots=True)
class Prediction:
    """Mastery ``horizon`` days ahead, and what it was predicted from.

    ``history_from``/``history_to`` are the first and last days with data that were
    fitted (``None`` when there were none); ``current`` is the newest snapshot's mastery.
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


def predict(
    days: Iterable[DaySnapshot],
    today: date,
    model: ScoringModel = DEFAULT_MODEL,
    forecast: Forecast = DEFAULT_FORECAST,
) -> Prediction:
    """Predict mastery ``forecast.horizon_days`` after ``today`` from the daily snapshots.

    Each component's score gets its own least-squares line over the window (``x = day -
    today``), so a component observed for the first time (which lifts mastery from a 0)
    is not mistaken for a trend. A component's prediction is its newest score plus its
    carried slope times the horizon (its score does not move on days without its events,
    so the newest score, not the line, is where it stands), clamped to [0, 1]; mastery is
    the weighted sum. The trend is the weighted sum of the fitted slopes. The order of
    ``days`` does not matter; a snapshot dated after ``today`` (a producer's clock a
    little ahead) moves ``today`` forward to it.
    """
    f = forecast
    ordered = sorted(days, key=lambda d: d.day)
    if ordered:
        today = max(today, ordered[-1].day)
    start = today - timedelta(days=f.window_days - 1)
    recent = [d for d in ordered if d.day >= start]
    horizon = today + timedelta(days=f.horizon_days)
    current = day_mastery(ordered[-1], model) if ordered else 0.0
    predicted = slope = residual = 0.0
    for c in Component:
        points = [((d.day - today).days, y) for d in recent if (y := d.scores.get(c)) is not None]
        latest = next((y for d in reversed(ordered) if (y := d.scores.get(c)) is not None), None)
        weight = model.weights[c]
        if not points:  # nothing new lately: the score stays where it was (0 if never seen)
            predicted += weight * (latest or 0.0)
            continue
        fit = fit_line([x for x, _ in points], [y for _, y in points])
        carried = fit.slope * f.damping * (fit.evidence if f.shrink else 1.0)
        predicted += weight * _clamp(points[-1][1] + carried * f.horizon_days)
        slope += weight * fit.slope
        residual += weight * fit.rmse
    n = len(recent)
    confidence = min(1.0, n / f.full_days) / (1.0 + (residual / f.rmse_scale) ** 2)
    return Prediction(
        predicted=_shown(predicted),
        current=_shown(current),
        slope_per_day=round(slope, 6),
        trend=trend_of(slope, f.stable_slope),
        confidence=round(confidence, 3),
        intervention_reason=_reason(predicted, slope, confidence, f) if n >= 2 else None,
        days_with_data=n,
        history_from=recent[0].day if recent else None,
        history_to=recent[-1].day if recent else None,
        horizon=horizon,
    )


def _reason(predicted: float, slope: float, confidence: float, f: Forecast) -> str | None:
    if confidence < f.min_confidence:
        return None
    reasons = []
    if predicted < f.flag_below:
        reasons.append(f"predicted mastery {predicted:.2f} is below {f.flag_below:.2f}")
    if slope <= -f.steep_slope:
        week = slope * f.horizon_days
        reasons.append(f"mastery is falling {-slope:.3f} a day ({week:+.2f} over a week)")
    return "; ".join(reasons) or None


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))

"""Mastery over time: a day's mastery, a least-squares line, and the trend it shows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from mastery.domain.scoring import DEFAULT_MODEL

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mastery.domain.model import DaySnapshot
    from mastery.domain.scoring import ScoringModel

__all__ = ["STABLE_SLOPE", "LineFit", "Trend", "day_mastery", "fit_line", "trend_of"]

#: Slopes within ±0.005 mastery a day (±0.035 a week) count as stable.
STABLE_SLOPE = 0.005


class Trend(StrEnum):
    IMPROVING = "improving"
    DECLINING = "declining"
    STABLE = "stable"


@dataclass(frozen=True, slots=True)
class LineFit:
    """``y = intercept + slope * x`` by least squares over ``n`` points.

    ``rmse`` is the root mean square residual; 0 for one or two points (a line fits
    them exactly), which is why confidence also weighs how many points there were.
    ``sxx`` is the spread of the xs, ``sum((x - mean) ** 2)``.
    """

    slope: float
    intercept: float
    rmse: float
    n: int
    sxx: float

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x

    @property
    def evidence(self) -> float:
        """How clearly the slope stands out of the noise, in [0, 1]: ``t² / (1 + t²)``.

        ``t`` is the slope over its standard error. 0 when there is no error estimate
        (fewer than three points); 1 for a perfect line.
        """
        if self.n < 3 or self.sxx <= 0:
            return 0.0
        variance = self.rmse**2 * self.n / (self.n - 2)
        if variance <= 0:
            return 1.0
        t2 = self.slope**2 * self.sxx / variance
        return t2 / (1.0 + t2)


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> LineFit:
    """Ordinary least squares; one point (or one distinct x) gives a flat line through the mean.

    Raises:
        ValueError: no points, or ``xs`` and ``ys`` differ in length.
    """
    n = len(xs)
    if n == 0 or n != len(ys):
        raise ValueError("fit_line needs the same number (>= 1) of xs and ys")
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    sse = math.fsum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return LineFit(slope, intercept, math.sqrt(sse / n), n, sxx)


def trend_of(slope_per_day: float, stable: float = STABLE_SLOPE) -> Trend:
    if slope_per_day > stable:
        return Trend.IMPROVING
    if slope_per_day < -stable:
        return Trend.DECLINING
    return Trend.STABLE


def day_mastery(snapshot: DaySnapshot, model: ScoringModel = DEFAULT_MODEL) -> float:
    """Mastery at the end of that day, by the model's weights (unobserved scores 0)."""
    # model.mastery() over the observed scores, without building a dict (history's hot loop).
    weights = model.weights
    return sum(weights[c] * s for c, s in snapshot.scores.items() if s is not None)

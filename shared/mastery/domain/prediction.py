"""Next week's mastery: the decayed mean with the events the student will likely produce.

Mastery is a recency-weighted mean, so next week's value is this week's sums, faded by a
week, plus next week's events. With no new events the faded sums keep their ratio: the
mean stays exactly where it is. The new events are expected per component at the
student's own recent event rate, each scoring where the student's raw scores will stand
next week: the component's own line through its raw scores, with one slope for all the
student's components (shrunk towards flat by how uncertain it is) and how far the recent
day means of all components stand off their lines (the mastery lags behind them). How
far the forecast moves towards that is shrunk by its own uncertainty (James-Stein: a
move the noise could explain is not made), since on a noisy plateau where recent scores
stand is mostly noise. A component without events yet counts 0 in mastery until its
first event: its arrival is expected too, at the chance that the student's event rate
gives it, scoring where the student's other components stand.
"""

from __future__ import annotations

import itertools
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

    from mastery.domain.days import DayActivity
    from mastery.domain.scoring import ScoringModel
    from mastery.domain.series import Trend

__all__ = ["DEFAULT_FORECAST", "Forecast", "Prediction", "predict"]


@dataclass(frozen=True, slots=True)
class Forecast:
    """How predictions are made; the values were chosen by ``bench backtest`` on its tuning seed.

    Attributes:
        window_days: the raw scores of the last this many days are used.
        horizon_days: how far ahead the prediction is.
        recency_days: in the recent level, raw scores this many days old count half.
        line_days: in the line through the raw scores, scores this many days old
            count half.
        rate_days: the event rate is that of the last this many days.
        aim_days: next week's events are taken to score where the trend stands this many
            days after today (the middle of the week ahead).
        slope_prior: typical size of a real trend (mastery a day); the raw scores' slope
            is shrunk towards flat by ``prior² / (prior² + var(slope))``.
        threshold: a forecast move ``d`` is first cut to ``d · (1 - threshold · var(d) / d²)``,
            nothing when that is negative (a move its own noise explains is not made).
        shrink: what is left of it, ``d'``, is scaled by ``d'² / (d'² + shrink · var(d'))``.
            Both chosen on the tuning seed after ``var(d)`` counted the shared slope's and
            offset's errors once (they had been summed as if independent per component,
            and 2 / 12 made up for it): the lowest overall error with every family at or
            below the last value's (threshold 0.5-2, shrink 1-6): 1.25 / 1.5, 0.8569x
            (0.8657x before); noisy plateaus 0.9998x bind it.
        min_noise: the raw scores' scatter (sd of one event) is taken as at least this.
        stable_slope: forecast change per day below which the trend is stable.
        flag_below: a forecast below this needs an intervention, when it stays below
            it by ``below_margin`` times the forecast's predicted error.
        flag_drop: an expected fall of at least this over the horizon needs one, when it
            is that far by ``drop_margin`` times the fall's own standard error.
        below_margin, drop_margin: chosen by a rule fixed before the search, on the
            tuning seed only (``python -m bench._flag_grid``, both in 0-3, step 0.25):
            the largest recall with precision >= 92 % (2 points above the 90 % target),
            ties to the higher precision. Re-run after each change to the predicted
            error (it is what the margins multiply); last after the move's variance
            counted the shared errors once: 1.0 / 2.0, 92.2 % / 66.8 % (after the
            arrival of components not practised yet: 1.0 / 2.25, 92.1 % / 66.3 %).
            ``below_margin`` is where the floor binds (0.75: 91.0 % / 69.2 %);
            ``drop_margin`` moves recall < 1 point over 0-3.
        min_confidence: interventions are only flagged at this confidence or above.
        arrival_shape: how sure a component without events is to come at the student's
            mean rate per component (the shape of its Gamma prior, in events): after
            ``n`` events of the other components its rate is that mean times
            ``shape / (shape + n / 4)``, so a component a busy student never touched is
            taken to be one they skip. The bench's students pick components uniformly,
            which would favour trusting the mean rate fully (the tuning seed: 0.8616x
            overall at 1,000 against 0.8657x at 2, 0.8975x with no arrival); real
            students skip components, which the generator does not model, so 2.
        idle_sd: uncertainty of a component without recent events (the student may
            come back to it, where they stand now, or not).
        error_scale: the forecast's predicted error at which confidence is one half.
    """

    window_days: int = 28
    horizon_days: int = 7
    recency_days: float = 7.0
    line_days: float = 14.0
    rate_days: int = 14
    aim_days: float = 4.0
    slope_prior: float = 0.006
    shrink: float = 1.5
    min_noise: float = 0.05
    stable_slope: float = 0.002
    flag_below: float = 0.40
    below_margin: float = 1.0
    flag_drop: float = 0.06
    drop_margin: float = 2.0
    min_confidence: float = 0.2
    error_scale: float = 0.03
    idle_sd: float = 0.05
    threshold: float = 1.25
    arrival_shape: float = 2.0


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
    move: float  # expected change by the horizon (before shrinking)
    move_var: float  # variance of ``move`` from the component's own line (its mean)
    new_var: float  # the new events' own noise in the horizon's score
    gap: float  # expected score of the new events minus ``now``
    # A component without events yet (``now`` is 0): its expected score at the horizon.
    arrival: float = 0.0
    arrival_var: float = 0.0
    # How much of the errors every component's level shares ``move`` carries: of the
    # slope's (its share times how far the slope is extrapolated) and of the recent offset's.
    slope_lean: float = 0.0
    off_lean: float = 0.0


@dataclass(frozen=True, slots=True)
class _Reading:
    """Where each component's raw scores will stand at ``aim_days``.

    ``levels``: per component, that level, the variance of its own part (its line's
    mean) and how many days its line is extrapolated from its mean. The slope and how far
    the recent day means stand off the lines are the student's, shared by every
    component: their variances are ``slope_var`` and ``off_var``, counted once in a move
    made of several components. ``noise``: the scatter of one event's score.
    """

    levels: dict[Component, tuple[float, float, float]]
    slope_var: float = 0.0
    off_var: float = 0.0
    noise: float = 0.0


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
    outlooks, reading = _outlooks(ordered, recent, today, first_day, half_life, f)
    current = move = move_var = error2 = gap = arrival = slope_lean = off_lean = 0.0
    for c, o in outlooks.items():
        weight = model.weights[c]
        current += weight * o.now
        move += weight * o.move
        move_var += weight**2 * o.move_var
        error2 += weight**2 * (o.new_var + o.arrival_var)
        gap += weight * o.gap
        arrival += weight * o.arrival
        slope_lean += weight * o.slope_lean
        off_lean += weight * o.off_lean
    # One slope and one recent offset for all components: their errors move every
    # component's level the same way, so they do not average out over the components.
    move_var += slope_lean**2 * reading.slope_var + off_lean**2 * reading.off_var
    # James-Stein, twice: the expected move is made as far as it stands out of its own
    # noise. First the positive part: a move within √threshold of its sd is not made at
    # all (on a flat skill where recent scores stand is noise that the coming events
    # revert, so any move costs); then what is left is shrunk smoothly.
    cut = max(0.0, 1.0 - f.threshold * move_var / move**2) if move else 0.0
    move *= cut
    move_var *= cut
    kept = move**2 / (move**2 + f.shrink * move_var) if move else 0.0
    predicted = min(1.0, max(0.0, current + kept * move + arrival))
    change = predicted - current
    # The predicted error: the new events' noise (and the arrivals'), and what is unsure
    # about the move.
    error = math.sqrt(error2 + move_var * kept + (1.0 - kept) ** 2 * move**2)
    confidence = 1.0 / (1.0 + (error / f.error_scale) ** 2) if recent else 0.0
    reason = None
    if recent and confidence >= f.min_confidence:
        reason = _reason(predicted, error, move, math.sqrt(move_var), gap, f)
    return Prediction(
        predicted=_shown(predicted),
        current=_shown(current),
        slope_per_day=round(change / f.horizon_days, 6),
        trend=trend_of(change / f.horizon_days, f.stable_slope),
        confidence=round(confidence, 3),
        intervention_reason=reason,
        days_with_data=len(recent),
        history_from=recent[0].day if recent else None,
        history_to=recent[-1].day if recent else None,
        horizon=horizon,
    )


_Points = list[tuple[int, int, float]]  # (day, 0 = today; events; the day's mean score)


def _outlooks(
    ordered: Sequence[DayActivity],
    recent: Sequence[DayActivity],
    today: date,
    first_day: date,
    half_life: float,
    f: Forecast,
) -> tuple[dict[Component, _Outlook], _Reading]:
    h = f.horizon_days
    rate_start = max(first_day, today - timedelta(days=f.rate_days - 1))
    rate_span = (today - rate_start).days + 1
    fade_h = 2.0 ** (-h / half_life)
    ahead_fade = math.fsum(2.0 ** (-(h - k) / half_life) for k in range(1, h + 1))
    nows: dict[Component, tuple[float, float]] = {}
    points: dict[Component, _Points] = {}
    for c in Component:
        s = w = 0.0  # the decayed sums at the end of today (today's events weigh 1)
        for d in ordered:
            if (m := d.events.get(c)) is not None:
                fade = 2.0 ** ((d.day - today).days / half_life)
                s += fade * m.units / UNITS
                w += fade * m.count
        if w > 0:
            nows[c] = (min(1.0, max(0.0, s / w)), w)
            points[c] = [
                ((d.day - today).days, m.count, m.units / m.count / UNITS)
                for d in recent
                if (m := d.events.get(c)) is not None
            ]
    reading = _levels(points, f)
    levels = reading.levels
    unseen = len(nows) < len(Component)  # only then is an arrival to expect
    arrival = _arrival(ordered, reading, (today - first_day).days + 1, f) if unseen else (0.0, 0.0)
    out: dict[Component, _Outlook] = {}
    for c in Component:
        if c not in nows:
            out[c] = _Outlook(0.0, 0.0, 0.0, 0.0, 0.0, *arrival)
            continue
        now, w = nows[c]
        events = sum(n for x, n, _ in points[c] if x > -f.rate_days)
        if not events or c not in levels:  # lately nothing: none expected, the mean stays
            out[c] = _Outlook(now, 0.0, 0.0, f.idle_sd**2, 0.0)
            continue
        rate = events / rate_span
        level, own_var, reach = levels[c]
        # Next week's events, at the rate, each faded to the horizon; today's sums fade a week.
        ahead = rate * ahead_fade
        share = ahead / (w * fade_h + ahead)  # of the horizon's mean
        gap = level - now
        new_var = share**2 * reading.noise**2 / max(1.0, rate * h)
        out[c] = _Outlook(
            now,
            share * gap,
            share**2 * own_var,
            new_var,
            gap,
            slope_lean=share * reach,
            off_lean=share,
        )
    return out, reading


def _arrival(
    ordered: Sequence[DayActivity], reading: _Reading, span: int, f: Forecast
) -> tuple[float, float]:
    """A component without events yet: its expected score at the horizon, and the variance.

    Its first events come at a Gamma-Poisson rate: prior mean the student's events per
    component and day over the ``span`` days since their first event, shape
    ``f.arrival_shape``, updated by none seen in those days. If any come, they score
    where the student's other components stand (their mean level). Nothing is expected
    of a student without recent raw scores.
    """
    levels = reading.levels
    if not levels:
        return 0.0, 0.0
    per_component = sum(m.count for d in ordered for m in d.events.values()) / len(Component)
    rate = per_component / span * f.arrival_shape / (f.arrival_shape + per_component)
    chance = 1.0 - math.exp(-rate * f.horizon_days)
    level = math.fsum(v[0] for v in levels.values()) / len(levels)
    return chance * level, chance * (1.0 - chance) * level**2 + chance * reading.noise**2


def _levels(points: dict[Component, _Points], f: Forecast) -> _Reading:
    """Per component: where its raw scores will stand at ``aim_days`` (``_Reading``).

    The student's components are taken to move together (one skill, four measures of
    it), each at its own level: one slope through all of them (each component's day
    means about its own mean, weighted by events, half at ``line_days``), shrunk towards
    flat by a prior of ``slope_prior``, so a slope the noise could explain barely moves
    it; each component's line through its own mean; and how far the recent day means
    stand off those lines (recency-weighted, half at ``recency_days``, pooled over the
    components, which is where a step or a turn shows first). The scatter is the
    student's too, from successive day means of every component.
    """
    pts = {c: p for c, p in points.items() if p}
    if not pts:
        return _Reading({})
    scatter = _scatter(pts.values())
    noise = max(f.min_noise, scatter) if scatter is not None else 0.15  # too few days: typical
    lines = {}
    sxx = sxy = sxx2 = 0.0
    for c, p in pts.items():
        lw = [n * 2.0 ** (x / f.line_days) for x, n, _ in p]
        total = math.fsum(lw)
        mx = math.fsum(w * x for w, (x, _, _) in zip(lw, p, strict=True)) / total
        my = math.fsum(w * y for w, (_, _, y) in zip(lw, p, strict=True)) / total
        sxx += math.fsum(w * (x - mx) ** 2 for w, (x, _, _) in zip(lw, p, strict=True))
        sxy += math.fsum(w * (x - mx) * (y - my) for w, (x, _, y) in zip(lw, p, strict=True))
        # var(slope) = noise² · Σ w²/n · (x - mx)² / sxx² (a day mean of n events: noise²/n)
        sxx2 += math.fsum(w * w / n * (x - mx) ** 2 for w, (x, n, _) in zip(lw, p, strict=True))
        my_var = math.fsum(w * w / n for w, (_, n, _) in zip(lw, p, strict=True)) / total**2
        lines[c] = (mx, my, my_var)
    prior = f.slope_prior**2
    lined = sum(len(p) for p in pts.values()) >= 3 and sxx > 0
    slope_var = noise**2 * sxx2 / sxx**2 if lined else prior
    kept = prior / (prior + slope_var)
    slope = kept * sxy / sxx if lined else 0.0
    slope_var *= kept
    rw = rs = rv = 0.0  # the recent day means off their component's line
    for c, p in pts.items():
        mx, my, _ = lines[c]
        for x, n, y in p:
            w = n * 2.0 ** (x / f.recency_days)
            rw += w
            rs += w * (y - my - slope * (x - mx))
            rv += w * w / n
    off = rs / rw
    off_var = noise**2 * rv / rw**2
    out = {}
    for c, (mx, my, my_var) in lines.items():
        reach = f.aim_days - mx
        out[c] = (min(1.0, max(0.0, my + slope * reach + off)), noise**2 * my_var, reach)
    return _Reading(out, slope_var, off_var, noise)


def _scatter(series: Iterable[Sequence[tuple[int, int, float]]]) -> float | None:
    """The sd of one event's score, from successive day means (a day mean of ``n`` events
    scatters by ``sd² / n``), pooled over the components: a trend, even one that turns,
    barely adds to the differences of neighbouring days, where it would to the residuals
    of a line. ``None`` with fewer than ``2`` pairs."""
    total = 0.0
    pairs = 0
    for points in series:
        for (_, n1, y1), (_, n2, y2) in itertools.pairwise(points):
            total += (y2 - y1) ** 2 / (1 / n1 + 1 / n2)
            pairs += 1
    return math.sqrt(total / pairs) if pairs >= 2 else None


def _reason(
    predicted: float, error: float, move: float, sd: float, gap: float, f: Forecast
) -> str | None:
    reasons = []
    if predicted + f.below_margin * error < f.flag_below:
        reasons.append(f"forecast mastery {predicted:.2f} is below {f.flag_below:g}")
    if move + f.drop_margin * sd <= -f.flag_drop:
        reasons.append(
            f"expected to fall {-move:.2f} in {f.horizon_days} days "
            f"(recent scores {-gap:.2f} below the mean)"
        )
    return "; ".join(reasons) or None

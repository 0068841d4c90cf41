"""Next week's mastery: the decayed mean with the events the student will likely produce.

Mastery is a recency-weighted mean, so next week's value is this week's sums, faded by a
week, plus next week's events. With no new events the faded sums keep their ratio: the
mean stays exactly where it is. The new events are expected per component at the
student's own recent event rate, each scoring where the student's raw scores will stand
next week: one skill for all the student's components, each at its own offset from it,
followed through every stored event by two Kalman filters (a trend and a flat skill)
weighed by how well each foresaw the student's days; the mastery lags behind it. How
far the forecast moves towards that is shrunk by its own uncertainty (James-Stein: a
move the noise could explain is barely made), since on a noisy plateau where recent
scores stand is mostly noise. A component without events yet counts 0 in mastery until its
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
        window_days: a student without events in the last this many days gets no
            confidence (and no intervention flag).
        horizon_days: how far ahead the prediction is.
        rate_days: the event rate is that of the last this many days (or of the days
            since the student's first event, if fewer).
        idle_days: a component without events in the last this many days is idle: none
            are expected of it, its mean stays.
        aim_days: next week's events are taken to score where the skill stands this many
            days after today (2 was chosen over the week's middle, 4: a reading carried
            further holds less).
        slope_prior: typical size of a real trend (mastery a day): the trend reading's
            slope starts flat within it.
        level_drift, slope_drift: how far the trend reading's level and slope may drift
            in a day (variances, of a local linear trend).
        flat_drift: how far the flat reading's level may drift in a day.
        flat_prior: the flat reading's prior weight; the two readings are weighed by how
            well each foresaw the student's next day.
        offset_prior: typical size of a component's offset from the student's skill (sd).
        shrink: a forecast move ``d`` is scaled by ``d² / (d² + shrink · var(d))``.
            The readings' drifts, ``flat_prior`` and ``shrink`` were chosen on the tuning
            seed by the issue's family bar (the lowest overall error with every family at
            or below the last value's), over level drift 5e-5-2e-4, slope drift
            1e-6-1e-5, flat prior 0.3-0.7, shrink 1-3 (and a threshold cut of 0-0.5,
            which only cost): 0.8440x (0.8569x with the line through the last 28 days
            before). Then, by the same rule, the event rate's window, ``aim_days`` and
            ``shrink`` (28-90 days, 1-4 days, 0.5-2; ``idle_days`` kept at the old
            window's 14): 60 / 2 / 0.75, 0.8376x; noisy plateaus 0.9995x bind it.
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
            error (it is what the margins multiply); last after the event rate's window
            and the shrink were re-chosen for the Kalman reading: 1.0 / 0.75, 92.3 % /
            65.9 %. The precision-recall curve barely moved; the 0.25 step did: at
            0.75 / 2.5, 68.7 % recall at a precision just under 92 % (with the 14-day
            rate: 0.75 / 3.0, 92.0 % / 68.6 %). ``below_margin`` is where the floor
            binds; ``drop_margin`` moves recall < 1.5 points over 0-3.
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
    rate_days: int = 60
    idle_days: int = 14
    aim_days: float = 2.0
    slope_prior: float = 0.006
    level_drift: float = 1e-4
    slope_drift: float = 3e-6
    flat_drift: float = 1e-6
    flat_prior: float = 0.5
    offset_prior: float = 0.06
    shrink: float = 0.75
    min_noise: float = 0.05
    stable_slope: float = 0.002
    flag_below: float = 0.40
    below_margin: float = 1.0
    flag_drop: float = 0.06
    drop_margin: float = 0.75
    min_confidence: float = 0.2
    error_scale: float = 0.03
    idle_sd: float = 0.05
    arrival_shape: float = 2.0


DEFAULT_FORECAST = Forecast()


@dataclass(frozen=True, slots=True)
class Prediction:
    """Mastery ``horizon`` days ahead, and what it was predicted from.

    ``days_with_data``, ``history_from``/``history_to``: how many days with events it was
    read from (every stored one) and the first and last (``None`` when there were none);
    ``current`` is mastery at the end of ``today`` as the
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
    move_var: float  # variance of ``move`` from the component's own offset
    new_var: float  # the new events' own noise in the horizon's score
    gap: float  # expected score of the new events minus ``now``
    # A component without events yet (``now`` is 0): its expected score at the horizon.
    arrival: float = 0.0
    arrival_var: float = 0.0
    # How much of the skill's error, which every component's level shares, ``move`` carries.
    lean: float = 0.0


@dataclass(frozen=True, slots=True)
class _Reading:
    """Where each component's raw scores will stand at ``aim_days``.

    ``levels``: per component, that level and the variance of its own part (its offset
    from the student's skill). The skill is read once for all the components: its
    variance, ``shared_var``, is counted once in a move made of several. ``noise``: the
    scatter of one event's score.
    """

    levels: dict[Component, tuple[float, float]]
    shared_var: float = 0.0
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
    lately = bool(ordered) and (today - ordered[-1].day).days < f.window_days
    horizon = today + timedelta(days=f.horizon_days)
    half_life = model.half_life / timedelta(days=1)
    first_day = ordered[0].day if ordered else today
    outlooks, reading = _outlooks(ordered, today, first_day, half_life, f)
    current = move = move_var = error2 = gap = arrival = lean = 0.0
    for c, o in outlooks.items():
        weight = model.weights[c]
        current += weight * o.now
        move += weight * o.move
        move_var += weight**2 * o.move_var
        error2 += weight**2 * (o.new_var + o.arrival_var)
        gap += weight * o.gap
        arrival += weight * o.arrival
        lean += weight * o.lean
    # One skill read for all components: its error moves every component's level the
    # same way, so it does not average out over the components.
    move_var += lean**2 * reading.shared_var
    # James-Stein: the expected move is made as far as it stands out of its own noise (on
    # a flat skill where recent scores stand is noise that the coming events revert).
    kept = move**2 / (move**2 + f.shrink * move_var) if move else 0.0
    predicted = min(1.0, max(0.0, current + kept * move + arrival))
    change = predicted - current
    # The predicted error: the new events' noise (and the arrivals'), and what is unsure
    # about the move.
    error = math.sqrt(error2 + move_var * kept + (1.0 - kept) ** 2 * move**2)
    confidence = 1.0 / (1.0 + (error / f.error_scale) ** 2) if lately else 0.0
    reason = None
    if lately and confidence >= f.min_confidence:
        reason = _reason(predicted, error, move, math.sqrt(move_var), gap, f)
    return Prediction(
        predicted=_shown(predicted),
        current=_shown(current),
        slope_per_day=round(change / f.horizon_days, 6),
        trend=trend_of(change / f.horizon_days, f.stable_slope),
        confidence=round(confidence, 3),
        intervention_reason=reason,
        days_with_data=len(ordered),
        history_from=ordered[0].day if ordered else None,
        history_to=ordered[-1].day if ordered else None,
        horizon=horizon,
    )


_Points = list[tuple[int, int, float]]  # (day, 0 = today; events; the day's mean score)


def _outlooks(
    ordered: Sequence[DayActivity],
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
                for d in ordered
                if (m := d.events.get(c)) is not None
            ]
    reading = _levels(points, f)
    levels = reading.levels
    # Only a student practising lately may start another component: one silent for
    # ``idle_days`` is expected nowhere, as each of their components is not.
    active = any(x > -f.idle_days for p in points.values() for x, _, _ in p)
    unseen = len(nows) < len(Component)  # only then is an arrival to expect
    arrival = (
        _arrival(ordered, reading, (today - first_day).days + 1, f)
        if unseen and active
        else (0.0, 0.0)
    )
    out: dict[Component, _Outlook] = {}
    for c in Component:
        if c not in nows:
            out[c] = _Outlook(0.0, 0.0, 0.0, 0.0, 0.0, *arrival)
            continue
        now, w = nows[c]
        if c not in levels or all(x <= -f.idle_days for x, _, _ in points[c]):
            out[c] = _Outlook(now, 0.0, 0.0, f.idle_sd**2, 0.0)  # lately nothing: none expected
            continue
        rate = sum(n for x, n, _ in points[c] if x > -f.rate_days) / rate_span
        level, own_var = levels[c]
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
            lean=share,
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

    The student's components are taken to measure one skill, each at its own offset
    from it (``_offsets``). The offset-corrected day means read the skill, each day's
    scattering by ``noise² / events``, and two filters follow it over the whole stored
    history (``_track``): a trend, whose level and slope drift (``level_drift``,
    ``slope_drift``), and a flat skill that barely drifts (``flat_drift``). They are
    weighed by how well each foresaw each next day (Bayesian model averaging, prior
    ``flat_prior`` on the flat one): on a noisy plateau the flat reading uses every
    event, for a learner the trend keeps up. The skill's error is every component's:
    ``shared_var``, counted once in a move made of several.
    """
    pts = {c: p for c, p in points.items() if p}
    if not pts:
        return _Reading({})
    scatter = _scatter(pts.values())
    noise = max(f.min_noise, scatter) if scatter is not None else 0.15  # too few days: typical
    by_day: dict[int, list[tuple[Component, int, float]]] = {}
    for c, p in pts.items():
        for x, n, y in p:
            by_day.setdefault(x, []).append((c, n, y))
    offsets = _offsets(pts, [v for v in by_day.values() if len(v) > 1], noise**2, f)
    series = []
    for x in sorted(by_day):
        events = sum(n for _, n, _ in by_day[x])
        mean = math.fsum(n * (y - offsets[c][0]) for c, n, y in by_day[x]) / events
        series.append((x, mean, noise**2 / events))
    trend = _track(series, f.level_drift, f.slope_drift, f.slope_prior, f.aim_days)
    flat = _track(series, f.flat_drift, 0.0, 0.0, f.aim_days)
    tracks = ((1.0 - f.flat_prior, trend), (f.flat_prior, flat))
    top = max(loglik for _, (_, _, loglik) in tracks)
    odds = [prior * math.exp(loglik - top) for prior, (_, _, loglik) in tracks]
    total = math.fsum(odds)
    weights = [o / total for o in odds]
    skill = math.fsum(w * level for w, (_, (level, _, _)) in zip(weights, tracks, strict=True))
    skill_var = math.fsum(
        w * (var + (level - skill) ** 2)
        for w, (_, (level, var, _)) in zip(weights, tracks, strict=True)
    )
    levels = {
        c: (min(1.0, max(0.0, skill + off)), off_var) for c, (off, off_var) in offsets.items()
    }
    return _Reading(levels, skill_var, noise)


def _offsets(
    pts: dict[Component, _Points],
    shared_days: Sequence[Sequence[tuple[Component, int, float]]],
    noise2: float,
    f: Forecast,
) -> dict[Component, tuple[float, float]]:
    """Each component's offset from the student's skill, and its variance.

    Read from the days with events of several components only, each day's own mean
    taken out (a same-day contrast holds no trend of the skill), shrunk towards none by a
    prior sd of ``offset_prior``: the least-squares offsets with every day's mean fitted
    too, from their normal equations (``m · offsets = b``, the day means solved out).
    """
    ridge = noise2 / f.offset_prior**2
    at = {c: i for i, c in enumerate(pts)}
    m = [[ridge if i == j else 0.0 for j in range(len(at))] for i in range(len(at))]
    b = [0.0] * len(at)
    for day in shared_days:
        events = sum(n for _, n, _ in day)
        mean = sum(n * y for _, n, y in day) / events
        for c, n, y in day:
            i = at[c]
            b[i] += n * (y - mean)
            m[i][i] += n
            for other, n2, _ in day:
                m[i][at[other]] -= n * n2 / events
    variances = [noise2 / m[i][i] for i in range(len(at))]  # what the contrasts tell of each
    offsets = _solve(m, b)
    return {c: (offsets[i], variances[i]) for c, i in at.items()}


def _solve(m: list[list[float]], b: list[float]) -> list[float]:
    """``x`` with ``m · x = b``, ``m`` small and diagonally dominant (its rows above sum to
    the ridge): Gaussian elimination without pivoting. ``m`` and ``b`` are consumed."""
    k = len(b)
    for i in range(k):
        for r in range(i + 1, k):
            q = m[r][i] / m[i][i]
            for j in range(i, k):
                m[r][j] -= q * m[i][j]
            b[r] -= q * b[i]
    x = [0.0] * k
    for i in reversed(range(k)):
        x[i] = (b[i] - math.fsum(m[i][j] * x[j] for j in range(i + 1, k))) / m[i][i]
    return x


def _track(
    series: Sequence[tuple[int, float, float]],
    level_drift: float,
    slope_drift: float,
    slope_sd: float,
    aim: float,
) -> tuple[float, float, float]:
    """A local linear trend (Kalman filter) through the day means ``(day, mean, variance)``.

    The level drifts by ``level_drift`` a day (a variance), the slope by ``slope_drift``,
    starting flat within ``slope_sd``; the first day's mean starts the level. Returns the
    level at day ``aim``, its variance, and the log-likelihood of the days after the first.
    """
    first, level, _ = series[0]
    slope, cov = 0.0, (1.0, 0.0, slope_sd**2)  # var(level), cov(level, slope), var(slope)
    loglik = 0.0
    last = first
    for x, mean, var in series:
        if x != first:  # to this day: the state moves on, and grows less certain
            level += (x - last) * slope
            cov = _drift(cov, x - last, level_drift, slope_drift)
        pll, pls, pss = cov
        spread = pll + var
        miss = mean - level
        if x != first:
            loglik -= 0.5 * (math.log(spread) + miss * miss / spread)
        kl, ks = pll / spread, pls / spread
        level += kl * miss
        slope += ks * miss
        cov = (pll - kl * pll, pls - kl * pls, pss - ks * pls)
        last = x
    reach = aim - last
    return level + reach * slope, _drift(cov, reach, level_drift, slope_drift)[0], loglik


def _drift(
    cov: tuple[float, float, float], days: float, level_drift: float, slope_drift: float
) -> tuple[float, float, float]:
    """A local linear trend's covariance ``days`` on (the slope a random walk in continuous
    time, the level its integral plus a random walk of its own)."""
    pll, pls, pss = cov
    return (
        pll + 2 * days * pls + days**2 * pss + days * level_drift + slope_drift * days**3 / 3,
        pls + days * pss + slope_drift * days**2 / 2,
        pss + days * slope_drift,
    )


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

"""How far a 7-day forecast from the day records can get: a learner fitted to the generator.

Not a benchmark of the engine, and not part of ``make bench``: an estimate of the room the
backtest's target (issue 16: 0.80x the last value's error) leaves. A gradient-boosted
model (LightGBM, absolute error) is trained on students drawn with the held-out set's own
generator settings under other seeds, and predicts next week's change on the held-out
set from what a forecast may read: the day records of the last ``--lags`` days, each
component's latest score and decayed weight, days since the last event, active days, the
engine's own prediction and the recent raw level. A learner fitted to the very
distribution it is scored on has an advantage no deployed forecast has; what it reaches
is therefore an optimistic estimate of what the records carry. ``--oracle`` adds the
generator's true skill and its slope that day (what no forecast sees): the same learner's
figure then shows the reading of the skill, not the learner, is what limits it.

Needs numpy and lightgbm, which the project does not depend on:
``.venv/bin/pip install numpy lightgbm``, then ``.venv/bin/python -m bench.learned_bound``
(about 2 minutes on 2 CPUs). Figures: bench/README.md, section (e), "Seventh pass".
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import lightgbm
import numpy

from bench.backtest import (
    FAMILIES,
    FRESH,
    HELD_OUT,
    ORIGIN,
    Settings,
    _raw_level,
    moments,
    simulate,
)
from mastery.domain import (
    DEFAULT_FORECAST,
    DEFAULT_MODEL,
    Component,
    DayActivity,
    end_of_day,
    predict,
)

if TYPE_CHECKING:
    from bench.backtest import Student

__all__ = ["Table", "features", "main", "ratios", "table"]

#: The sets it can score, each trained on its own generator settings under other seeds.
_HELD_OUT = (HELD_OUT, FRESH)
_HALF_LIFE_DAYS = DEFAULT_MODEL.half_life / timedelta(days=1)
_PARAMS = {
    "objective": "l1",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "verbose": -1,
}


class Table:
    """Per prediction: the features, next week's change, and what scores it."""

    def __init__(self) -> None:
        self.features: list[list[float]] = []
        self.change: list[float] = []
        self.family: list[str] = []
        self.now: list[float] = []
        self.later: list[float] = []
        self.engine: list[float] = []


def features(seen: list[DayActivity], today: date, now: float, lags: int) -> list[float]:
    """What a forecast may read on ``today``, as numbers (NaN: no event)."""
    p = predict(seen, today, DEFAULT_MODEL, DEFAULT_FORECAST)
    last = end_of_day(seen)[-1].scores
    row = [p.predicted - now, p.confidence, _raw_level(seen, today, now) - now]
    row += [math.nan if (score := last[c]) is None else score for c in Component]
    for c in Component:
        counts = [(d.events[c].count, (today - d.day).days) for d in seen if c in d.events]
        row.append(sum(n * 0.5 ** (age / _HALF_LIFE_DAYS) for n, age in counts))
        row.append(sum(n for n, _ in counts))
    by_day = {d.day: d for d in seen}
    for lag in range(lags):
        d = by_day.get(today - timedelta(days=lag))
        units = count = 0
        for c in Component:
            m = d.events.get(c) if d else None
            row += [math.nan, 0] if m is None else [m.units / m.count / 10000, m.count]
            units, count = units + (m.units if m else 0), count + (m.count if m else 0)
        row += [units / count / 10000 if count else math.nan, count]
    row.append((today - max(d.day for d in seen)).days)
    row += [sum((today - d.day).days < w for d in seen) for w in (7, 14, 28, 60)]
    return row


def table(settings: Settings, lags: int, oracle: bool) -> Table:
    """Every prediction the backtest makes on ``settings``' students."""
    out = Table()
    h = DEFAULT_FORECAST.horizon_days
    for s, t, seen in moments(simulate(settings), settings, h):
        now, later = s.mastery[t], s.mastery[t + h]
        row = features(seen, ORIGIN + timedelta(days=t), now, lags)
        if oracle:
            row += _truth(s, t)
        out.features.append(row)
        out.change.append(later - now)
        out.family.append(s.family)
        out.now.append(now)
        out.later.append(later)
        out.engine.append(now + row[0])
    return out


def _truth(s: Student, t: int) -> list[float]:
    return [s.skill[t], s.skill[t] - s.skill[t - 1]]


def ratios(t: Table, predicted: Any) -> dict[str, tuple[float, float]]:
    """Per family and overall: (learner, engine) MAE as a multiple of the last value's."""
    family = numpy.array(t.family)
    later, now = numpy.array(t.later), numpy.array(t.now)
    last = numpy.abs(now - later)
    learner = numpy.abs(predicted - later)
    engine = numpy.abs(numpy.array(t.engine) - later)
    out = {}
    for name in (*FAMILIES, "overall"):
        k = family == name if name != "overall" else numpy.ones(len(family), bool)
        out[name] = (learner[k].mean() / last[k].mean(), engine[k].mean() / last[k].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learned_bound", description=__doc__)
    parser.add_argument("--train-seeds", type=int, default=4, help="sets to train on (4)")
    parser.add_argument("--lags", type=int, default=28, help="days of records read (28)")
    parser.add_argument("--rounds", type=int, default=600, help="boosting rounds (600)")
    parser.add_argument("--oracle", action="store_true", help="add the true skill and slope")
    parser.add_argument(
        "--held-out",
        type=int,
        choices=[s.seed for s in _HELD_OUT],
        default=HELD_OUT.seed,
        help=f"the held-out set scored, by its seed ({HELD_OUT.seed})",
    )
    args = parser.parse_args()
    held_out = next(s for s in _HELD_OUT if s.seed == args.held_out)
    train = [
        table(replace(held_out, seed=1001 + i), args.lags, args.oracle)
        for i in range(args.train_seeds)
    ]
    x = numpy.array([r for t in train for r in t.features], dtype=float)
    y = numpy.array([c for t in train for c in t.change])
    model = lightgbm.train(_PARAMS, lightgbm.Dataset(x, y), args.rounds)
    held = table(held_out, args.lags, args.oracle)
    predicted = numpy.array(held.now) + model.predict(numpy.array(held.features, dtype=float))
    print(
        f"trained on {len(y):,} predictions ({args.train_seeds} sets: the held-out set's settings,"
        f" seeds 1001-{1000 + args.train_seeds}), {args.lags} days of records"
        f"{', with the true skill and slope' if args.oracle else ''}; scored on seed"
        f" {held_out.seed} ({len(held.change):,} predictions)"
    )
    print("| family | learner | engine |\n|---|---:|---:|")
    for name, (learner, engine) in ratios(held, predicted).items():
        print(f"| {name} | {learner:.3f}x | {engine:.3f}x |")


if __name__ == "__main__":
    main()

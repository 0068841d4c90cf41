"""The scoring model: decay weights, folding events, mastery, levels and the explanation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from mastery.domain.model import Aggregate, Component, Level, Observation, StudentState

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_MODEL",
    "ComponentReport",
    "Increment",
    "MasteryReport",
    "NextLevel",
    "ScoringModel",
    "current_classes",
    "day_number",
    "explain",
    "fold",
]

#: Fixed origin of the decay weights. Only ratios of weights matter, so any origin
#: gives the same scores; a recent one keeps 2**(t/half_life) far from float overflow
#: (a 14-day half-life reaches 1e308 only ~39 years after it).
DECAY_ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
_ORIGIN_S = DECAY_ORIGIN.timestamp()


def day_number(occurred_at_s: float) -> int:
    """The day of an event, counted from the decay origin (UTC days)."""
    return math.floor((occurred_at_s - _ORIGIN_S) / 86400)


_COMPONENTS = tuple(Component)

_DEFAULT_WEIGHTS = MappingProxyType(
    {
        Component.COMPLETION: 0.40,
        Component.QUIZ: 0.30,
        Component.QUALITY: 0.20,
        Component.CONSISTENCY: 0.10,
    }
)
#: Lower bound of each level, highest first.
_DEFAULT_FLOORS = (
    (Level.EXPERT, 0.90),
    (Level.PROFICIENT, 0.75),
    (Level.COMPETENT, 0.60),
    (Level.DEVELOPING, 0.40),
    (Level.BEGINNER, 0.0),
)


@dataclass(frozen=True, slots=True)
class Increment:
    """What one observation adds to its aggregates: ``weight`` and ``weight * score``."""

    component: Component
    area: str | None
    weight: float
    weighted_value: float


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """Weights, levels and time windows; the defaults are the README's scoring model."""

    weights: Mapping[Component, float] = field(default_factory=lambda: _DEFAULT_WEIGHTS)
    level_floors: tuple[tuple[Level, float], ...] = _DEFAULT_FLOORS
    half_life: timedelta = timedelta(days=14)
    window: timedelta = timedelta(days=90)
    max_clock_skew: timedelta = timedelta(minutes=5)
    class_lapse: timedelta = timedelta(days=30)
    """A class stops being the student's once their events have carried other classes
    this long after its last (``current_classes``)."""

    def __post_init__(self) -> None:
        weights = self.weights.values()
        if (
            set(self.weights) != set(Component)
            or not all(math.isfinite(w) and w >= 0 for w in weights)
            or abs(sum(weights) - 1.0) > 1e-9
        ):
            raise ValueError("weights must cover every component, be >= 0 and sum to 1")
        floors = [floor for _, floor in self.level_floors]
        if not floors or floors != sorted(floors, reverse=True) or len(set(floors)) != len(floors):
            raise ValueError("level_floors must be listed highest first, each floor once")

    def decay_weight(self, occurred_at: datetime) -> float:
        """``2 ** ((t - origin) / half_life)``: newer events weigh more, exponentially."""
        age = occurred_at.timestamp() - _ORIGIN_S
        return float(2.0 ** (age / self.half_life.total_seconds()))

    def increment(self, observation: Observation) -> Increment:
        w = self.decay_weight(observation.occurred_at)
        return Increment(observation.component, observation.area, w, w * observation.score)

    def inadmissible(self, occurred_at: datetime, now: datetime) -> str | None:
        """Why an event at ``occurred_at`` cannot be applied at ``now``, or ``None``."""
        if occurred_at > now + self.max_clock_skew:
            return f"occurred_at {occurred_at.isoformat()} is in the future"
        if occurred_at < now - self.window:
            days = self.window.days
            return f"occurred_at {occurred_at.isoformat()} is older than the {days}-day window"
        return None

    def mastery(self, scores: Mapping[Component, float]) -> float:
        return sum(self.weights[c] * scores.get(c, 0.0) for c in _COMPONENTS)

    def level(self, mastery: float) -> Level:
        return self.standing(mastery)[0]

    def next_level(self, mastery: float) -> NextLevel | None:
        """The next level up and how far away it is; ``None`` at the top."""
        return self.standing(mastery)[1]

    def standing(self, mastery: float) -> tuple[Level, NextLevel | None]:
        """The level ``mastery`` reaches, and the next one up (``None`` at the top)."""
        above: tuple[Level, float] | None = None
        for level, floor in self.level_floors:
            if mastery >= floor:
                break
            above = (level, floor)
        # Below every floor (only a negative mastery) still counts as the lowest level.
        up = None if above is None else NextLevel(above[0], round(above[1] - mastery, 4))
        return level, up


DEFAULT_MODEL = ScoringModel()


def fold(
    state: StudentState, observations: Iterable[Observation], model: ScoringModel = DEFAULT_MODEL
) -> StudentState:
    """Apply observations to a state. Order-independent; the store does the same in Lua."""
    components = dict(state.components)
    areas = dict(state.areas)
    class_days = dict(state.class_days)
    last = state.last_event_at
    version = state.version
    for obs in observations:
        inc = model.increment(obs)
        components[obs.component] = components.get(obs.component, Aggregate()).add(
            obs.score, inc.weight
        )
        if obs.area:
            key = (obs.component, obs.area)
            areas[key] = areas.get(key, Aggregate()).add(obs.score, inc.weight)
        t = obs.occurred_at.timestamp()
        if obs.class_id:
            class_days[obs.class_id] = max(day_number(t), class_days.get(obs.class_id, -1))
        last = t if last is None else max(last, t)
        version += 1
    classes = current_classes(class_days, model.class_lapse.days)
    return StudentState(components, areas, classes, last, state.updated_at, version)


def current_classes(class_days: Mapping[str, int], lapse_days: int) -> dict[str, int]:
    """The classes a student still belongs to: those an event of theirs carried within
    ``lapse_days`` of the newest day any class was carried (``apply.lua`` does the same).

    Counted from their own newest class day, not from today: a student who stops
    practising stays in their classes (their teacher must see them); one who moved to
    another class leaves the old one once the new one's events span ``lapse_days``.
    Whatever the order events arrive in, the same classes remain: the newest day only
    grows, and a class dropped here could only come back by a newer event.
    """
    if not class_days:
        return {}
    newest = max(class_days.values())
    return {c: day for c, day in class_days.items() if day > newest - lapse_days}


@dataclass(frozen=True, slots=True)
class ComponentReport:
    score: float
    weight: float
    contribution: float
    events: int
    observed: bool


@dataclass(frozen=True, slots=True)
class NextLevel:
    level: Level
    gap: float


@dataclass(frozen=True, slots=True)
class MasteryReport:
    """The explained score: each component's part in it and the distance to the next level."""

    mastery: float
    level: Level
    components: Mapping[Component, ComponentReport]
    next_level: NextLevel | None


def _shown(x: float) -> float:
    """Round to 4 decimals for display, stably.

    Sums taken in another order differ in the last bits; rounding to 9 decimals first
    erases that, so a value at a rounding tie shows (and levels) the same in every order.
    Away from a tie (nearly always) both roundings equal ``round(x * 1e4) / 1e4``, which
    is several times cheaper than ``round(x, 4)``; ``test_scoring`` checks the equality.
    """
    scaled = x * 10000.0
    if abs(scaled - math.floor(scaled) - 0.5) > _NEAR_TIE:
        return round(scaled) / 10000.0
    return round(round(x, 9), 4)


#: How close to a tie ``x * 1e4`` must be for the 9-decimal rounding to matter: it
#: moves ``x`` by at most 5e-10, so ``x * 1e4`` by at most 5e-6 (plus float error).
_NEAR_TIE = 1e-5


def explain(state: StudentState, model: ScoringModel = DEFAULT_MODEL) -> MasteryReport:
    """Score a state and say how each component contributed."""
    # The hot path of a batch (1,000 students explained per run): one pass, each mean once.
    weights = model.weights
    parts: dict[Component, ComponentReport] = {}
    means: dict[Component, float] = {}
    for c in _COMPONENTS:
        agg = state.component(c)
        weight = weights[c]
        mean = means[c] = agg.mean
        parts[c] = ComponentReport(
            score=_shown(mean),
            weight=weight,
            contribution=_shown(weight * mean),
            events=agg.count,
            observed=agg.observed,
        )
    mastery = _shown(model.mastery(means))
    level, up = model.standing(mastery)
    return MasteryReport(mastery, level, parts, up)

"""Value objects of the scoring model: components, levels, observations, aggregates."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import date, datetime

__all__ = ["Aggregate", "Component", "DaySnapshot", "Level", "Observation", "StudentState"]


class Component(StrEnum):
    """The four measured dimensions of learning, in weight order."""

    COMPLETION = "completion"
    QUIZ = "quiz"
    QUALITY = "quality"
    CONSISTENCY = "consistency"


class Level(StrEnum):
    """Mastery levels, lowest first."""

    BEGINNER = "beginner"
    DEVELOPING = "developing"
    COMPETENT = "competent"
    PROFICIENT = "proficient"
    EXPERT = "expert"


@dataclass(frozen=True, slots=True)
class Observation:
    """One validated learning event: a value in [0, 1] for one component."""

    event_id: str
    tenant: str
    student_id: str
    component: Component
    score: float
    occurred_at: datetime
    area: str | None = None
    class_id: str | None = None
    voidable: bool = False
    """An xAPI statement: what it adds is kept (the window long) so a voiding can subtract it."""
    voids: str | None = None
    """A voiding statement: the id of the statement whose effect it removes (then
    ``component`` and ``score`` mean nothing)."""
    digest: bytes | None = None
    """An xAPI statement: the digest of what it says (``mastery.events.comparison``), kept
    with what it adds: another statement under its id must say the same, or is refused."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A decayed running mean: ``sum(w * value) / sum(w)`` over the events seen.

    Sums commute, so folding the same events in any order gives the same aggregate.
    """

    weighted_sum: float = 0.0
    weight: float = 0.0
    count: int = 0

    @property
    def observed(self) -> bool:
        return self.count > 0

    @property
    def mean(self) -> float:
        """The recency-weighted mean, 0.0 when nothing was observed."""
        if self.weight <= 0.0:
            return 0.0
        # Float sums can drift a hair outside [0, 1]; scores never do.
        return min(1.0, max(0.0, self.weighted_sum / self.weight))

    def add(self, value: float, weight: float) -> Aggregate:
        return Aggregate(self.weighted_sum + weight * value, self.weight + weight, self.count + 1)


@dataclass(frozen=True, slots=True)
class StudentState:
    """Everything the scoring model needs about one student.

    ``areas`` holds the same aggregates per (component, area) for finer advice;
    ``class_days``, the student's current classes (``classes``) and the last day an event
    of theirs carried each (``days.day_number``; see ``scoring.current_classes``);
    ``last_event_at`` is the newest ``occurred_at`` folded in (epoch seconds).
    """

    components: Mapping[Component, Aggregate] = field(default_factory=dict)
    areas: Mapping[tuple[Component, str], Aggregate] = field(default_factory=dict)
    class_days: Mapping[str, int] = field(default_factory=dict)
    last_event_at: float | None = None
    updated_at: float | None = None
    version: int = 0

    @property
    def classes(self) -> frozenset[str]:
        """The classes whose teachers may see this student (``mastery.policy``)."""
        return frozenset(self.class_days)

    def component(self, component: Component) -> Aggregate:
        return self.components.get(component, _EMPTY)

    @property
    def events(self) -> int:
        return sum(a.count for a in self.components.values())


@dataclass(frozen=True, slots=True)
class DaySnapshot:
    """A student's component scores at the end of one active day (``None``: unobserved)."""

    day: date
    scores: Mapping[Component, float | None]


_EMPTY = Aggregate()

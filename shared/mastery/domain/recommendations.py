"""Rule-based study advice: what to work on first, from the components and areas below target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from mastery.domain.model import Component
from mastery.domain.scoring import DEFAULT_MODEL, _shown

if TYPE_CHECKING:
    from mastery.domain.model import Aggregate, StudentState
    from mastery.domain.scoring import ScoringModel

__all__ = [
    "ACTIONS",
    "MAX_RECOMMENDATIONS",
    "TARGET",
    "Priority",
    "Recommendation",
    "StudyAction",
    "estimated_minutes",
    "priority_of",
    "recommend",
]

#: Scores below this are weak.
TARGET = 0.70
MAX_RECOMMENDATIONS = 9


class StudyAction(StrEnum):
    PRACTICE = "practice"
    REVIEW = "review"
    REFACTOR = "refactor"
    SCHEDULE = "schedule"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


ACTIONS = MappingProxyType(
    {
        Component.COMPLETION: StudyAction.PRACTICE,
        Component.QUIZ: StudyAction.REVIEW,
        Component.QUALITY: StudyAction.REFACTOR,
        Component.CONSISTENCY: StudyAction.SCHEDULE,
    }
)
_WHAT = MappingProxyType(
    {
        StudyAction.PRACTICE: "finish more exercises",
        StudyAction.REVIEW: "review the material and retake quizzes",
        StudyAction.REFACTOR: "revise submitted code with the review feedback",
        StudyAction.SCHEDULE: "study in short sessions on more days",
    }
)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One piece of advice; ``area`` is ``None`` for a whole component.

    ``impact`` is what closing the gap would add to mastery: the component's weight
    times the gap to ``TARGET`` (an area counts with its component's weight).
    """

    component: Component
    area: str | None
    action: StudyAction
    priority: Priority
    score: float
    observed: bool
    impact: float
    estimated_minutes: int
    reason: str


def recommend(state: StudentState, model: ScoringModel = DEFAULT_MODEL) -> list[Recommendation]:
    """At most ``MAX_RECOMMENDATIONS``, highest impact first; empty when nothing is below target.

    A component without events counts (it scores 0 in mastery, so it is the largest
    lever) and is advised as a start; areas are only known from events, so always observed.
    """
    found = [_advice(c, None, state.component(c), model) for c in Component]
    found += [_advice(c, area, agg, model) for (c, area), agg in state.areas.items()]
    weak = [r for r in found if r is not None]
    order = {c: i for i, c in enumerate(Component)}
    weak.sort(key=lambda r: (-r.impact, order[r.component], r.area is not None, r.area or ""))
    return weak[:MAX_RECOMMENDATIONS]


def priority_of(impact: float) -> Priority:
    if impact >= 0.06:
        return Priority.HIGH
    if impact >= 0.03:
        return Priority.MEDIUM
    return Priority.LOW


def estimated_minutes(gap: float) -> int:
    """15 minutes plus 15 for every 0.05 of gap, rounded up to 5: a 0.70 gap is 225 min."""
    return 5 * math.ceil((15 + 300 * gap) / 5 - 1e-9)


def _advice(
    component: Component, area: str | None, agg: Aggregate, model: ScoringModel
) -> Recommendation | None:
    score = _shown(agg.mean)
    if score >= TARGET:
        return None
    gap = _shown(TARGET - score)
    impact = _shown(model.weights[component] * gap)
    action = ACTIONS[component]
    what = f"{component} in {area}" if area else str(component)
    if agg.observed:
        digits = 2 if gap >= 0.005 else 4  # not "0.00 below" for a score just under
        reason = (
            f"{what} is at {score:.{digits}f}, {gap:.{digits}f} below {TARGET:.2f}: {_WHAT[action]}"
        )
    else:
        reason = f"no {what} activity yet (it counts as 0): start, {_WHAT[action]}"
    return Recommendation(
        component=component,
        area=area,
        action=action,
        priority=priority_of(impact),
        score=score,
        observed=agg.observed,
        impact=impact,
        estimated_minutes=estimated_minutes(gap),
        reason=reason,
    )

"""Pydantic mirrors of ``events/*.avsc`` with the checks Avro cannot express.

A unit test proves the field names, types and optionality agree with the schemas.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mastery.domain import Component
from mastery.fields import EventId, Rfc3339

__all__ = [
    "CompletionEvent",
    "ConsistencyEvent",
    "LearningEvent",
    "QualityEvent",
    "QuizEvent",
    "event_model",
]

_Area = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,47}$")]


class LearningEvent(BaseModel):
    """Fields common to the four event types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId
    tenant: EventId
    occurred_at: Rfc3339
    score: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    class_id: EventId | None = None
    area: _Area | None = None


class CompletionEvent(LearningEvent):
    exercise_id: str | None = None


class QuizEvent(LearningEvent):
    quiz_id: str | None = None
    correct: Annotated[int, Field(ge=0)] | None = None
    total: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _correct_within_total(self) -> Self:
        if self.correct is not None and self.total is not None and self.correct > self.total:
            raise ValueError("correct must not exceed total")
        return self


class QualityEvent(LearningEvent):
    submission_id: str | None = None


class ConsistencyEvent(LearningEvent):
    streak_days: Annotated[int, Field(ge=0)] | None = None


_MODELS: dict[Component, type[LearningEvent]] = {
    Component.COMPLETION: CompletionEvent,
    Component.QUIZ: QuizEvent,
    Component.QUALITY: QualityEvent,
    Component.CONSISTENCY: ConsistencyEvent,
}


def event_model(component: Component) -> type[LearningEvent]:
    return _MODELS[component]

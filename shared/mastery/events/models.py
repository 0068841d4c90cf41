"""Pydantic mirrors of ``events/*.avsc`` with the checks Avro cannot express.

A unit test proves the field names, types and optionality agree with the schemas.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mastery.domain import Component

__all__ = [
    "ID_PATTERN",
    "CompletionEvent",
    "ConsistencyEvent",
    "EventId",
    "LearningEvent",
    "QualityEvent",
    "QuizEvent",
    "Rfc3339",
    "event_model",
]

#: Ids end up inside Redis key names: no braces, colons or spaces, bounded length.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
EventId = Annotated[str, Field(pattern=ID_PATTERN)]
_Area = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,47}$")]
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text: pydantic alone would also take epoch numbers in a string."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-14T09:30:00Z")
    return value


#: A date-time as the API documents it: RFC 3339 text with an offset, nothing else
#: (pydantic's ``AwareDatetime`` alone also takes a number, or a number in a string, as a
#: Unix time). Every date-time an event or a request body carries.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


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

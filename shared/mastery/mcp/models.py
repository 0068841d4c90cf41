"""What each MCP tool answers: typed, compact views of the HTTP functions' documents.

Each is the structured content of a tool result (its JSON schema is the tool's
``outputSchema``). They carry what a model needs to reason with and drop what only a
service needs (tenant, state version, cache flags): every token counts for an agent.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AtRisk",
    "CohortFigures",
    "ComparisonAnswer",
    "ComponentScore",
    "HistoryAnswer",
    "HistorySummary",
    "MasteryAnswer",
    "NextLevel",
    "PredictionAnswer",
    "Recommendation",
    "RecommendationsAnswer",
    "RiskAnswer",
]

Level = Literal["beginner", "developing", "competent", "proficient", "expert"]
Trend = Literal["improving", "declining", "stable"]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class ComponentScore(_Answer):
    score: float = Field(description="0-1, recency-weighted mean of the component's events")
    weight: float = Field(description="share of mastery: completion 0.4, quiz 0.3, ...")
    contribution: float = Field(description="score x weight: what it adds to mastery")
    events: int
    observed: bool = Field(description="false: no event yet, the score counts as 0")


class NextLevel(_Answer):
    level: Level
    gap: float = Field(description="mastery still needed to reach it")


class MasteryAnswer(_Answer):
    student_id: str
    mastery: float = Field(description="0-1")
    level: Level
    components: dict[str, ComponentScore]
    next_level: NextLevel | None = Field(description="null at expert")
    updated_at: str | None = Field(description="time of the latest event (RFC 3339)")


class PredictionAnswer(_Answer):
    student_id: str
    current_mastery: float
    predicted_mastery: float = Field(description="expected mastery on predicted_for")
    predicted_level: Level
    predicted_for: date
    trend: Trend
    slope_per_day: float = Field(description="mastery change per day")
    confidence: float = Field(description="0-1; below 0.2 never flags an intervention")
    intervention_needed: bool
    intervention_reason: str | None
    days_with_data: int = Field(
        description="days with events the forecast was read from (the 90-day window)"
    )


class Recommendation(_Answer):
    component: str
    area: str | None
    action: Literal["practice", "review", "refactor", "schedule"]
    priority: Literal["high", "medium", "low"]
    estimated_minutes: int
    reason: str
    score: float
    observed: bool


class RecommendationsAnswer(_Answer):
    student_id: str
    mastery: float
    target: float = Field(description="components and areas below this are listed")
    recommendations: list[Recommendation] = Field(description="highest impact first, <= 9")


class HistorySummary(_Answer):
    count: int = Field(description="periods with data")
    min: float
    max: float
    mean: float
    first: float
    last: float
    change: float = Field(description="last - first")


class HistoryAnswer(_Answer):
    student_id: str
    start: date = Field(alias="from")
    end: date = Field(alias="to")
    granularity: Literal["day", "week", "month"]
    mastery: list[float | None] = Field(
        description="one value per day, ISO week or month from `from` to `to`, oldest first: "
        "the mean mastery of its days with data (2 decimals), null when it has none"
    )
    summary: HistorySummary | None = Field(description="null: no data in the range")
    trend: Trend
    slope_per_day: float


class CohortFigures(_Answer):
    mean: float
    median: float
    percentile: float = Field(description="share of the cohort below the student, ties half")


class ComparisonAnswer(_Answer):
    student_id: str
    scope: Literal["class", "school"]
    class_id: str | None
    cohort_size: int
    student: dict[str, float] = Field(description="mastery and each component score")
    cohort: dict[str, CohortFigures] | None = Field(
        description="per metric; null when the cohort is too small (privacy)"
    )
    message: str | None = None


class AtRisk(_Answer):
    student_id: str
    current_mastery: float
    predicted_mastery: float
    predicted_level: Level
    trend: Trend
    slope_per_day: float
    confidence: float
    reason: str | None


class RiskAnswer(_Answer):
    class_id: str | None
    checked: int = Field(description="students whose prediction was looked at")
    flagged: int = Field(description="of them, flagged for an intervention")
    complete: bool = Field(description="false: more students than one call looks at (1000)")
    students: list[AtRisk] = Field(description="highest risk first, at most limit")

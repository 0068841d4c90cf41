"""The documents the HTTP functions answer, as pydantic models: the OpenAPI document's schemas.

Each handler builds its answer as one of these and ``model_response`` serializes it, so
the bytes sent are the model's: a handler that drifts from its model is a type error
(mypy, the pydantic plugin types the constructors) or a validation error at
construction, not a finding of the schema-driven fuzzing. ``extra="forbid"`` becomes
``additionalProperties: false``; optional members a handler does not write are left
unset, and omitted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from mastery.domain import Level
from mastery.domain.batch import BatchStatus, Priority
from mastery.domain.history import Granularity
from mastery.domain.series import Trend

__all__ = [
    "About",
    "AuditDocument",
    "BatchAccepted",
    "BatchDone",
    "BatchStatusDocument",
    "CompareDocument",
    "ErasureDocument",
    "EventOutcome",
    "ExportDocument",
    "FieldError",
    "HistoryDocument",
    "MasteryDocument",
    "PredictionDocument",
    "ProblemDocument",
    "ProcessDocument",
    "RecommendationsDocument",
    "StatementIds",
]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldError(_Doc):
    field: str
    message: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details; some errors add members (``errors``, ``checks``, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    correlation_id: str | None = None
    errors: list[FieldError] | None = None


class ComponentPart(_Doc):
    score: float
    weight: float
    contribution: float
    events: int
    observed: bool


class NextLevel(_Doc):
    level: Level
    gap: float


class MasteryDocument(_Doc):
    """``POST /mastery/query``: a student's explained score."""

    student_id: str
    tenant: str
    mastery: float
    level: Level
    components: dict[str, ComponentPart]
    next_level: NextLevel | None
    updated_at: str | None
    version: int


class PredictionHistory(_Doc):
    from_: str | None = Field(alias="from")
    to: str | None
    days_with_data: int


class PredictionDocument(_Doc):
    """``POST /predictions/next-week``."""

    student_id: str
    tenant: str
    current_mastery: float | None
    predicted_mastery: float
    predicted_level: Level
    predicted_for: str
    trend: Trend
    slope_per_day: float
    confidence: float
    intervention_needed: bool
    intervention_reason: str | None
    history: PredictionHistory
    version: int
    cached: bool


class Recommendation(_Doc):
    component: str
    area: str | None
    action: str
    priority: Literal["high", "medium", "low"]
    estimated_minutes: int
    reason: str
    score: float
    observed: bool
    impact: float


class RecommendationsDocument(_Doc):
    """``POST /recommendations/adaptive``."""

    student_id: str
    tenant: str
    mastery: float
    target: float
    message: str
    recommendations: list[Recommendation]
    version: int


class Bucket(_Doc):
    start: str
    end: str
    days: int
    mastery: float | None
    components: dict[str, float | None]


class HistorySummary(_Doc):
    count: int
    min: float
    max: float
    mean: float
    stdev: float
    first: float
    last: float
    change: float


class HistoryDocument(_Doc):
    """``POST /analytics/mastery-history`` with ``format: json``."""

    student_id: str
    tenant: str
    from_: str = Field(alias="from")
    to: str
    granularity: Granularity
    series: list[Bucket]
    summary: HistorySummary | None
    trend: Trend
    slope_per_day: float | None
    version: int


class CohortFigures(_Doc):
    mean: float
    median: float
    percentile: float


class CompareDocument(_Doc):
    """``POST /analytics/compare``; ``message`` says why ``cohort`` is withheld."""

    student_id: str
    tenant: str
    scope: Literal["class", "school"]
    class_id: str | None
    cohort_size: int
    student: dict[str, float]
    cohort: dict[str, CohortFigures] | None
    message: str | None = None


class ProcessDocument(_Doc):
    """``POST /process``: the intent's answer in an envelope."""

    intent: Literal["calculation", "prediction", "recommendations"]
    result: MasteryDocument | PredictionDocument | RecommendationsDocument
    error: None
    correlation_id: str


class Aggregate(_Doc):
    weighted_sum: float
    weight: float
    events: int


class Aggregates(_Doc):
    components: dict[str, Aggregate]
    areas: dict[str, Aggregate]


class ExportedDay(_Doc):
    date: str
    mastery: float
    components: dict[str, float | None]
    """Each component's score at the day's end; ``null`` while it has no event yet."""


class ExportedEvent(_Doc):
    audit_id: str
    outcome: str | None
    reason: str | None = None
    event: Any


class ExportedStatement(_Doc):
    """What is kept of one xAPI statement so that a voiding can undo it."""

    statement_hash: str
    """BLAKE2b-64 of the statement id, hex: what the store keys it by."""
    date: str
    voided: bool
    component: str | None = None
    score: float | None = None
    area: str | None = None


class ExportDocument(_Doc):
    """``POST /gdpr/export``: everything held about the student."""

    student_id: str
    tenant: str
    exported_at: str
    mastery: MasteryDocument | None
    classes: list[str]
    aggregates: Aggregates | None
    history: list[ExportedDay]
    events: list[ExportedEvent]
    xapi_statements: list[ExportedStatement]
    event_id_hashes: list[str]
    """BLAKE2b-64 of each event id seen (hex), kept to count each event once."""
    batch_results: dict[str, Any]
    """The student's result in each batch run still kept (24 h), by batch id."""
    pending_level_changes: list[dict[str, Any]]
    """Their level changes not yet announced (held only while the broker is unreachable),
    as ``mastery.level-changed`` will carry them."""


class ErasureDocument(_Doc):
    """``POST /gdpr/erase``."""

    student_id: str
    tenant: str
    erased_at: str
    keys_deleted: int
    audit_entries_removed: int
    batch_results_removed: int


class AuditDocument(_Doc):
    """``POST /audit/recent``: access records and event outcomes, newest first."""

    tenant: str
    records: list[dict[str, Any]]
    complete: bool


class BatchDone(_Doc):
    """``POST /batch/mastery`` answered at once (up to 100 students, not ``async``)."""

    batch_id: None
    tenant: str
    status: BatchStatus
    priority: Priority
    total: int
    succeeded: int
    failed: int
    summary: dict[str, Any]
    results: list[dict[str, Any]]


class BatchAccepted(_Doc):
    """``POST /batch/mastery`` queued (202): poll ``status_url``."""

    batch_id: str
    tenant: str
    status: BatchStatus
    priority: Priority
    total: int
    deadline_at: str
    status_url: str


class BatchStatusDocument(_Doc):
    """``GET /batch/mastery/{batch_id}``; results once the batch is final."""

    batch_id: str
    tenant: str
    status: BatchStatus
    priority: Priority
    total: int
    processed: int
    progress: float
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    deadline_at: str | None
    succeeded: int | None = None
    failed: int | None = None
    summary: dict[str, Any] | None = None
    results: list[dict[str, Any]] | None = None
    reason: str | None = None


class EventOutcome(_Doc):
    """``POST /`` of an event handler: what became of the delivered record."""

    outcome: str
    reason: str | None = None
    batch_id: str | None = None


class StatementIds(RootModel[list[str]]):
    """``POST /xapi/statements``: the statements' ids, in the order sent."""


class About(_Doc):
    """``GET /xapi/about``: the xAPI versions spoken (xAPI 1.0.3, Communication 2.8)."""

    version: list[str]

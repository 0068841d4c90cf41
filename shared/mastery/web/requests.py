"""The bodies the HTTP functions take, as pydantic models: the OpenAPI document's request schemas.

Each model validates its handler's body (``extra="forbid"``: an unknown member is a
422) and is the schema ``mastery.web.openapi`` documents, next to the answers of
``mastery.web.responses``. Pure: no handler, no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from mastery.domain.batch import Priority
from mastery.domain.history import Granularity
from mastery.fields import ID_PATTERN, EventId, Rfc3339

__all__ = [
    "INTEGER",
    "MAX_STUDENTS",
    "AuditRequest",
    "BatchRequest",
    "CompareRequest",
    "HistoryRequest",
    "Intent",
    "IntentEnvelope",
    "JsonInt",
    "JsonRpcMessage",
    "ProcessRequest",
    "QueryRequest",
    "RiskRequest",
    "StudentRequest",
]

#: Most students one batch names.
MAX_STUDENTS = 1000
Intent = Literal["calculation", "prediction", "recommendations"]


def _json_integer(value: Any) -> Any:
    """A JSON number, as JSON Schema's ``integer`` takes it: ``28`` and ``28.0``, not
    ``true`` (lax pydantic reads it as 1) nor ``"28"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")  # pydantic reports a ValueError as a 422
    return value


#: What refuses the values JSON Schema's ``integer`` does not take (lax ``int`` takes
#: booleans and numeric strings, ``strict`` refuses ``28.0``). An optional bounded integer
#: puts its bounds first, so that the schema keeps them: ``Annotated[int, Field(ge=1),
#: INTEGER] | None``.
INTEGER = BeforeValidator(_json_integer)
#: The integer of every request model.
JsonInt = Annotated[int, INTEGER]


class StudentRequest(BaseModel):
    """A body naming one student: ``{"student_id": "s1"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId = Field(examples=["s1"])


class QueryRequest(StudentRequest):
    """``{"student_id": "s1"}``."""


class HistoryRequest(StudentRequest):
    """``{"student_id", "days": 7-90, "granularity": "day"|"week"|"month", "format": ...}``."""

    days: JsonInt = Field(30, ge=7, le=90)
    granularity: Granularity = Granularity.DAY
    format: Literal["json", "csv", "ndjson"] = "json"


class CompareRequest(StudentRequest):
    # The validator below, for the OpenAPI document: a class_id only with scope "class".
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["scope"], "properties": {"scope": {"const": "class"}}},
                {"properties": {"class_id": {"type": "null"}}},
            ]
        }
    )

    scope: Literal["class", "school"] = "school"
    class_id: EventId | None = None
    """For ``scope: class``: one of the student's classes (default: the first the caller
    may see, by name)."""

    @model_validator(mode="after")
    def _class_needs_class_scope(self) -> CompareRequest:
        if self.class_id is not None and self.scope != "class":
            raise ValueError("class_id applies to scope 'class' only")
        return self


class ProcessRequest(StudentRequest):
    """``POST /process``: an intent and the body its dedicated function takes."""

    intent: Intent


class IntentEnvelope(BaseModel):
    """``POST /process`` read for its intent first; the rest is the intent's own request."""

    model_config = ConfigDict(extra="allow")

    intent: Intent


class AuditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["access", "events", "all"] = "all"
    limit: JsonInt = Field(100, ge=1, le=1000)
    student_id: EventId | None = None
    """Only records naming this student (access records listing them, their events)."""
    since: Rfc3339 | None = None
    """Only records from this time on (RFC 3339 with an offset)."""


class BatchRequest(BaseModel):
    # Only the alias is the wire name: ``run_async`` in a body is an unknown field (422).
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Ids are checked by the handler (a 422 naming each bad one); the schema states the same.
    student_ids: list[StrictStr] = Field(
        min_length=1,
        json_schema_extra={
            "items": {"type": "string", "pattern": ID_PATTERN},
            "maxItems": MAX_STUDENTS,
            "uniqueItems": True,
        },
    )
    priority: Priority = Priority.NORMAL
    run_async: StrictBool = Field(False, alias="async")
    deadline_s: Annotated[int, Field(ge=1, le=86_400), INTEGER] | None = None
    """Seconds from submission after which unfinished students become ``timeout``."""


class RiskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    class_id: EventId | None = None
    """One class; default: every class of a teacher's token, or the whole school for an
    admin (its ``CANDIDATES_MAX`` lowest-scoring students)."""
    limit: JsonInt = Field(10, ge=1, le=100)


class JsonRpcMessage(BaseModel):
    """``POST /mcp``: one JSON-RPC 2.0 message of the MCP Streamable HTTP transport."""

    model_config = ConfigDict(extra="allow")

    jsonrpc: Literal["2.0"]
    method: str
    id: Any = None
    params: dict[str, Any] | None = None

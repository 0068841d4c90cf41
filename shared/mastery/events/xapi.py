"""xAPI 1.0.3 statements as strict models, and their mapping to the engine's observations.

The mapping (docs/xapi.md): the student is ``actor.account.name``; ``completed`` feeds
completion; ``passed``, ``failed``, ``scored``, ``answered`` with a ``result.score`` feed
quiz; the result extensions ``QUALITY`` / ``CONSISTENCY`` (a value in [0, 1]) feed
quality / consistency whatever the verb; ``voided`` (its object a ``StatementRef``) removes
the effect of the statement it names (``Observation.voids``). Anything else is valid but
maps to nothing: ``IgnoredEvent``. A statement that is not valid xAPI is ``InvalidEvent``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from mastery.domain import Component, Observation
from mastery.errors import IgnoredEvent, InvalidEvent
from mastery.fields import ID_PATTERN, is_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mastery.domain import ScoringModel

__all__ = [
    "CONSISTENCY",
    "QUALITY",
    "TENANT_HEADER",
    "VERBS",
    "VOIDED",
    "Statement",
    "Statements",
    "observation_of",
    "parse_statement",
    "statement_id",
]

ADL = "http://adlnet.gov/expapi/verbs/"
QUALITY = "https://w3id.org/xapi/mastery-engine/extensions/quality"
CONSISTENCY = "https://w3id.org/xapi/mastery-engine/extensions/consistency"
AREA = "https://w3id.org/xapi/mastery-engine/extensions/area"
#: verb IRI -> component (quiz verbs need a result.score)
VERBS: Mapping[str, Component] = {
    f"{ADL}completed": Component.COMPLETION,
    f"{ADL}passed": Component.QUIZ,
    f"{ADL}failed": Component.QUIZ,
    f"{ADL}scored": Component.QUIZ,
    f"{ADL}answered": Component.QUIZ,
}
VOIDED = f"{ADL}voided"
#: A ``mastery.xapi`` record's tenant, when its producer knows it (``POST``/``PUT
#: /xapi/statements`` put the token's): honoured before the ``account.homePage``
#: mapping. Only trusted producers may write the topic (Kafka ACLs, docs/decisions.md).
TENANT_HEADER = "mastery_tenant"
_SEGMENT = re.compile(r"[/=#]")
_NS = uuid.UUID("5b6a3f4e-9f0b-4c31-9a44-1d7e0c2f6a10")

# A calendar date, a "T" (or a space) and a time: what ``_timestamp`` hands to the parser,
# which alone would also take a date without a time, or any character between the two.
_DATE_TIME = re.compile(r"^\d{4}-?\d{2}-?\d{2}[Tt ]\d")


def _timestamp(value: object) -> object:
    """An ISO 8601 date and time, read by ``datetime.fromisoformat``; one without a UTC
    offset is taken as UTC.

    Laxer than the RFC 3339 of native events (``mastery.fields.Rfc3339``): xAPI asks for
    ISO 8601 and only recommends an offset (Data 4.5), LMSs send ``2026-01-02T03:04:05``
    or ``+0000``, and refusing one refused its whole batch. Numbers stay refused.
    """
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-01-14T09:30:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 date and time (a field out of range?)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp)]
Iri = Annotated[StrictStr, Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")]
LanguageMap = dict[StrictStr, StrictStr]
Number = StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Account(_Strict):
    home_page: Iri = Field(alias="homePage")
    name: StrictStr = Field(min_length=1)


class Agent(_Strict):
    """An Agent identified by exactly one inverse functional identifier."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": [ifi]} for ifi in ("mbox", "mbox_sha1sum", "openid", "account")]
        }
    )

    object_type: Literal["Agent"] | None = Field(None, alias="objectType")
    name: StrictStr | None = None
    mbox: StrictStr | None = Field(None, pattern=r"^mailto:\S+@\S+$")
    mbox_sha1sum: StrictStr | None = Field(None, pattern=r"^[0-9a-fA-F]{40}$")
    openid: Iri | None = None
    account: Account | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> Agent:
        ids = [self.mbox, self.mbox_sha1sum, self.openid, self.account]
        if sum(i is not None for i in ids) != 1:
            raise ValueError("an Agent has exactly one of mbox, mbox_sha1sum, openid, account")
        return self


class Group(_Strict):
    object_type: Literal["Group"] = Field(alias="objectType")
    name: StrictStr | None = None
    member: list[Agent] | None = None
    mbox: StrictStr | None = None
    mbox_sha1sum: StrictStr | None = None
    openid: Iri | None = None
    account: Account | None = None


class Verb(_Strict):
    id: Iri
    display: LanguageMap | None = None


class ActivityDefinition(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # interaction details vary

    name: LanguageMap | None = None
    description: LanguageMap | None = None
    type: Iri | None = None
    extensions: dict[str, Any] | None = None


class Activity(_Strict):
    object_type: Literal["Activity"] | None = Field(None, alias="objectType")
    id: Iri
    definition: ActivityDefinition | None = None


class StatementRef(_Strict):
    object_type: Literal["StatementRef"] = Field(alias="objectType")
    id: uuid.UUID


class SubStatement(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    object_type: Literal["SubStatement"] = Field(alias="objectType")


class Score(_Strict):
    scaled: Number | None = Field(None, ge=-1, le=1)
    raw: Number | None = None
    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Score:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("score.min must be less than score.max")
        if self.raw is not None:
            if self.min is not None and self.raw < self.min:
                raise ValueError("score.raw is below score.min")
            if self.max is not None and self.raw > self.max:
                raise ValueError("score.raw is above score.max")
        return self


class Result(_Strict):
    score: Score | None = None
    success: StrictBool | None = None
    completion: StrictBool | None = None
    response: StrictStr | None = None
    duration: StrictStr | None = None
    extensions: dict[StrictStr, Any] | None = None


class ContextActivities(_Strict):
    parent: Activity | list[Activity] | None = None
    grouping: Activity | list[Activity] | None = None
    category: Activity | list[Activity] | None = None
    other: Activity | list[Activity] | None = None


class Context(_Strict):
    registration: uuid.UUID | None = None
    instructor: Agent | Group | None = None
    team: Group | None = None
    context_activities: ContextActivities | None = Field(None, alias="contextActivities")
    revision: StrictStr | None = None
    platform: StrictStr | None = None
    language: StrictStr | None = None
    statement: StatementRef | None = None
    extensions: dict[StrictStr, Any] | None = None


class Statement(_Strict):
    """One xAPI 1.0.x statement; unknown properties are refused, as an LRS refuses them."""

    id: uuid.UUID | None = None
    actor: Agent | Group
    verb: Verb
    object: Activity | StatementRef | Agent | Group | SubStatement
    result: Result | None = None
    context: Context | None = None
    timestamp: Timestamp | None = None
    stored: Timestamp | None = None
    authority: Agent | Group | None = None
    version: Annotated[StrictStr, Field(pattern=r"^1\.0(\.\d+)?$")] | None = None
    attachments: list[dict[str, Any]] | None = None


class Statements(
    RootModel[Statement | Annotated[list[Statement], Field(min_length=1, max_length=1000)]]
):
    """``POST /xapi/statements``: one statement or an array of them."""


def parse_statement(raw: Any) -> Statement:
    """``raw`` as a statement; ``InvalidEvent`` naming what is wrong."""
    try:
        return Statement.model_validate(raw)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'statement'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise InvalidEvent(f"not a valid xAPI statement: {where}") from None


def statement_id(raw: Mapping[str, Any]) -> str:
    """The statement's id, or one derived from its content (a resent copy gets the same)."""
    given = raw.get("id")
    if isinstance(given, str):
        return given
    return str(uuid.uuid5(_NS, orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()))


def observation_of(
    statement: Statement,
    event_id: str,
    *,
    tenant: str | None,
    tenants: Mapping[str, str],
    now: datetime,
    model: ScoringModel,
) -> Observation:
    """The observation a statement stands for.

    Args:
        tenant: the caller's tenant (HTTP, from the token; on the topic, the record's
            ``TENANT_HEADER``), else ``None``: ``tenants`` maps the actor's
            ``account.homePage`` to one.
    Raises:
        IgnoredEvent: valid xAPI that feeds no component (or lies outside the window).
        InvalidEvent: no tenant for it, or a student id the engine cannot key.
    """
    actor = statement.actor
    account = actor.account if isinstance(actor, Agent) else None
    if account is None:
        raise IgnoredEvent(
            "actor has no account (the student is account.name)", tenant, event_id=event_id
        )
    if tenant is None:
        tenant = tenants.get(account.home_page)
        if tenant is None:
            raise InvalidEvent(f"no tenant configured for homePage {account.home_page!r}")
    if not is_id(account.name):
        raise InvalidEvent(f"account.name must match {ID_PATTERN}", tenant)
    voids = _voided(statement)
    try:
        component, score = (Component.COMPLETION, 0.0) if voids else _feeds(statement)
    except IgnoredEvent as exc:
        raise IgnoredEvent(exc.reason, tenant, account.name, event_id) from None
    occurred = statement.timestamp or statement.stored or now
    if reason := model.inadmissible(occurred, now):
        raise IgnoredEvent(f"timestamp {reason}", tenant, account.name, event_id)
    return Observation(
        event_id=event_id,
        tenant=tenant,
        student_id=account.name,
        component=component,
        score=min(1.0, max(0.0, float(score))),
        occurred_at=occurred,
        area=None if voids else _area(statement),
        class_id=None if voids else _class(statement),
        voidable=voids is None,
        voids=voids,
    )


def _voided(statement: Statement) -> str | None:
    """The id of the statement a voiding statement voids; ``None`` for any other verb."""
    if statement.verb.id != VOIDED:
        return None
    target = statement.object
    if not isinstance(target, StatementRef):
        raise InvalidEvent("a voiding statement's object is a StatementRef")
    return str(target.id)


def _feeds(statement: Statement) -> tuple[Component, float]:
    verb = statement.verb.id
    result = statement.result
    extensions = (result.extensions if result else None) or {}
    for iri, component in ((QUALITY, Component.QUALITY), (CONSISTENCY, Component.CONSISTENCY)):
        if iri in extensions:
            value = extensions[iri]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise InvalidEvent(f"extension {iri} must be a number in [0, 1]")
            return component, float(value)
    mapped = VERBS.get(verb)
    if mapped is None:
        raise IgnoredEvent(f"verb {verb} maps to no component")
    score = _scaled(result.score if result else None)
    if mapped is Component.COMPLETION:
        return mapped, 1.0 if score is None else score
    if score is None:
        raise IgnoredEvent(f"verb {verb} without result.score (scaled, or raw and max)")
    return mapped, score


def _scaled(score: Score | None) -> float | None:
    if score is None:
        return None
    if score.scaled is not None:
        return float(score.scaled)
    if score.raw is not None and score.max is not None:
        low = Fraction(score.min if score.min is not None else 0)
        if score.max > low:  # exact: float differences overflow (1e308 - -1e308 is inf)
            return float((Fraction(score.raw) - low) / (Fraction(score.max) - low))
    return None


def _first(activities: Activity | list[Activity] | None) -> Activity | None:
    if isinstance(activities, list):
        return activities[0] if activities else None
    return activities


def _class(statement: Statement) -> str | None:
    """The grouping activity's last id segment (``...course/view.php?id=2`` -> ``2``),
    else the registration."""
    ctx = statement.context
    if ctx is None:
        return None
    extensions = ctx.extensions or {}
    grouping = _first(ctx.context_activities.grouping) if ctx.context_activities else None
    if grouping is not None:
        segment = _SEGMENT.split(grouping.id.rstrip("/"))[-1]
        if is_id(segment):
            return segment
    if ctx.registration is not None:
        return str(ctx.registration)
    named = extensions.get("https://w3id.org/xapi/mastery-engine/extensions/class")
    return named if is_id(named) else None


def _area(statement: Statement) -> str | None:
    extensions = (statement.context.extensions if statement.context else None) or {}
    area = extensions.get(AREA)
    return area if is_id(area) else None

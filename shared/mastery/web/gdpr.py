"""``POST /gdpr/export`` and ``POST /gdpr/erase``: a student's rights over their data.

Export gives everything held about the student: state, daily history, and the audit of
their events. Erasure deletes every key of the student and their cohort index entries
in one atomic script, leaves a tombstone (a replayed older event is refused, not
re-applied), then removes their entries from the event audit. Both are idempotent; an
erasure interrupted after the atomic step is finished by sending it again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from pydantic import BaseModel, ConfigDict

from mastery.domain import explain
from mastery.events.models import EventId
from mastery.policy import Action
from mastery.web.app import json_response, read_body
from mastery.web.auth import authorize_student, precheck
from mastery.web.problems import Problem
from mastery.web.query import mastery_document

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.domain import Aggregate, DaySnapshot, ScoringModel
    from mastery.store import AuditEntry
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["erase_student", "export_student"]


class StudentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId


async def _student(request: Request, ctx: Context, action: Action) -> tuple[Principal, str]:
    principal = await ctx.principal(request)
    body = await read_body(request, StudentRequest, ctx.resources.settings.max_body_bytes)
    ctx.students.append(body.student_id)
    precheck(principal, action, body.student_id)
    return principal, body.student_id


async def export_student(request: Request, ctx: Context) -> Response:
    principal, student = await _student(request, ctx, Action.EXPORT)
    store, model = ctx.resources.store, ctx.resources.model
    state = await store.load(principal.tenant, student)
    if state is not None:
        authorize_student(principal, student, state.classes, Action.EXPORT)
    history = await store.history(principal.tenant, student)
    events = await store.audit_entries(principal.tenant, student)
    if state is None and not history and not events:
        raise Problem(404, "no data held for this student")
    return json_response(
        {
            "student_id": student,
            "tenant": principal.tenant,
            "exported_at": datetime.now(UTC),
            "mastery": mastery_document(student, principal.tenant, state, explain(state, model))
            if state
            else None,
            "classes": sorted(state.classes) if state else [],
            "aggregates": {
                "components": {c.value: _aggregate(a) for c, a in state.components.items()},
                "areas": {f"{c}:{area}": _aggregate(a) for (c, area), a in state.areas.items()},
            }
            if state
            else None,
            "history": [_day(d, model) for d in history],
            "events": [_audit(entry) for entry in events],
        }
    )


async def erase_student(request: Request, ctx: Context) -> Response:
    principal, student = await _student(request, ctx, Action.ERASE)
    store, now = ctx.resources.store, datetime.now(UTC)
    deleted = await store.erase(principal.tenant, student, now)
    entries = await store.audit_entries(principal.tenant, student)
    redacted = await store.redact_audit(principal.tenant, [entry_id for entry_id, _ in entries])
    return json_response(
        {
            "student_id": student,
            "tenant": principal.tenant,
            "erased_at": now,
            "keys_deleted": deleted,
            "audit_entries_removed": redacted,
        }
    )


def _aggregate(agg: Aggregate) -> dict[str, float | int]:
    return {"weighted_sum": agg.weighted_sum, "weight": agg.weight, "events": agg.count}


def _day(snapshot: DaySnapshot, model: ScoringModel) -> dict[str, object]:
    observed = {c: v for c, v in snapshot.scores.items() if v is not None}
    return {
        "date": snapshot.day.isoformat(),
        "mastery": round(model.mastery(observed), 4),
        "components": {c.value: v for c, v in snapshot.scores.items()},
    }


def _audit(entry: AuditEntry) -> dict[str, object]:
    entry_id, fields = entry
    doc: dict[str, object] = {"audit_id": entry_id, "outcome": fields.get("outcome")}
    if "reason" in fields:
        doc["reason"] = fields["reason"]
    doc["event"] = orjson.loads(fields["event"]) if "event" in fields else None
    return doc

"""``POST /mastery/query``: a student's explained mastery score."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mastery.domain import explain
from mastery.web.app import json_response
from mastery.web.student import StudentRequest, read_student_request, require_visible

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.domain import MasteryReport, StudentState
    from mastery.web.app import Context

__all__ = ["QueryRequest", "mastery_document", "query_mastery"]


class QueryRequest(StudentRequest):
    """``{"student_id": "s1"}``."""


async def query_mastery(request: Request, ctx: Context) -> Response:
    principal, body = await read_student_request(request, ctx, QueryRequest)
    found = await ctx.resources.store.load(principal.tenant, body.student_id)
    state = require_visible(principal, body.student_id, found)
    report = explain(state, ctx.resources.model)
    return json_response(mastery_document(body.student_id, principal.tenant, state, report))


def mastery_document(
    student_id: str, tenant: str, state: StudentState, report: MasteryReport
) -> dict[str, object]:
    """The Contract's response body."""
    updated = state.updated_at
    return {
        "student_id": student_id,
        "tenant": tenant,
        "mastery": report.mastery,
        "level": report.level.value,
        "components": {
            c.value: {
                "score": part.score,
                "weight": part.weight,
                "contribution": part.contribution,
                "events": part.events,
                "observed": part.observed,
            }
            for c, part in report.components.items()
        },
        "next_level": (
            {"level": report.next_level.level.value, "gap": report.next_level.gap}
            if report.next_level
            else None
        ),
        "updated_at": datetime.fromtimestamp(updated, UTC).isoformat() if updated else None,
        "version": state.version,
    }

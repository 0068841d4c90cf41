"""``POST /mastery/query``: a student's explained mastery score."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mastery.domain import explain
from mastery.web.student import StudentRequest, require_visible, student_endpoint

if TYPE_CHECKING:
    from mastery.domain import MasteryReport, StudentState
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["QueryRequest", "mastery_document", "mastery_of", "query_mastery"]


class QueryRequest(StudentRequest):
    """``{"student_id": "s1"}``."""


async def mastery_of(ctx: Context, principal: Principal, body: StudentRequest) -> dict[str, Any]:
    """The student's explained score (intent ``calculation``)."""
    found = await ctx.resources.store.load(principal.tenant, body.student_id)
    state = require_visible(principal, body.student_id, found)
    report = explain(state, ctx.resources.model)
    return mastery_document(body.student_id, principal.tenant, state, report)


query_mastery = student_endpoint(QueryRequest, mastery_of)


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

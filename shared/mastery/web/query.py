"""``POST /mastery/query``: a student's explained mastery score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.documents import mastery_document
from mastery.domain import explain
from mastery.web.requests import QueryRequest, StudentRequest
from mastery.web.responses import MasteryDocument
from mastery.web.student import require_visible, student_endpoint, student_state

if TYPE_CHECKING:
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["mastery_document", "mastery_of", "query_mastery"]


async def mastery_of(ctx: Context, principal: Principal, body: StudentRequest) -> MasteryDocument:
    """The student's explained score (intent ``calculation``)."""
    found = await student_state(ctx, principal, body.student_id)
    state = require_visible(principal, body.student_id, found)
    report = explain(state, ctx.resources.model)
    doc = mastery_document(body.student_id, principal.tenant, state, report)
    return MasteryDocument.model_validate(doc)


query_mastery = student_endpoint(QueryRequest, mastery_of, read_state=True)

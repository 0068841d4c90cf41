"""``POST /mastery/query``: a student's explained mastery score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from mastery.documents import mastery_document
from mastery.domain import explain
from mastery.events.models import EventId
from mastery.policy import Action
from mastery.web.app import json_response, read_body
from mastery.web.auth import authorize_student, precheck
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.web.app import Context

__all__ = ["QueryRequest", "mastery_document", "query_mastery"]


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId


async def query_mastery(request: Request, ctx: Context) -> Response:
    principal = await ctx.principal(request)
    body = await read_body(request, QueryRequest, ctx.resources.settings.max_body_bytes)
    ctx.students.append(body.student_id)
    precheck(principal, Action.READ, body.student_id)
    state = await ctx.resources.store.load(principal.tenant, body.student_id)
    if state is None:
        raise Problem(404, "no mastery data for this student")
    authorize_student(principal, body.student_id, state.classes)
    report = explain(state, ctx.resources.model)
    return json_response(mastery_document(body.student_id, principal.tenant, state, report))

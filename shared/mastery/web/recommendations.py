"""``POST /recommendations/adaptive``: what to study first, from the weak components and areas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.domain import explain, recommend
from mastery.domain.recommendations import TARGET
from mastery.web.app import json_response
from mastery.web.student import StudentRequest, read_student_request, require_visible

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.web.app import Context

__all__ = ["recommend_adaptive"]


async def recommend_adaptive(request: Request, ctx: Context) -> Response:
    principal, body = await read_student_request(request, ctx, StudentRequest)
    found = await ctx.resources.store.load(principal.tenant, body.student_id)
    state = require_visible(principal, body.student_id, found)
    model = ctx.resources.model
    items = recommend(state, model)
    message = (
        f"{len(items)} recommendation{'s' if len(items) != 1 else ''}, highest impact first"
        if items
        else f"nothing below {TARGET:.2f}: every component and area is on target"
    )
    return json_response(
        {
            "student_id": body.student_id,
            "tenant": principal.tenant,
            "mastery": explain(state, model).mastery,
            "target": TARGET,
            "message": message,
            "recommendations": [
                {
                    "component": r.component.value,
                    "area": r.area,
                    "action": r.action.value,
                    "priority": r.priority.value,
                    "estimated_minutes": r.estimated_minutes,
                    "reason": r.reason,
                    "score": r.score,
                    "observed": r.observed,
                    "impact": r.impact,
                }
                for r in items
            ],
            "version": state.version,
        }
    )

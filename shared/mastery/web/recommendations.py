"""``POST /recommendations/adaptive``: what to study first, from the weak components and areas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.domain import explain, recommend
from mastery.domain.recommendations import TARGET
from mastery.web.requests import StudentRequest
from mastery.web.responses import Recommendation, RecommendationsDocument
from mastery.web.student import require_visible, student_endpoint, student_state

if TYPE_CHECKING:
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["recommend_adaptive", "recommendations_of"]


async def recommendations_of(
    ctx: Context, principal: Principal, body: StudentRequest
) -> RecommendationsDocument:
    """What to study first (intent ``recommendations``)."""
    found = await student_state(ctx, principal, body.student_id)
    state = require_visible(principal, body.student_id, found)
    model = ctx.resources.model
    items = recommend(state, model)
    message = (
        f"{len(items)} recommendation{'s' if len(items) != 1 else ''}, highest impact first"
        if items
        else f"nothing below {TARGET:.2f}: every component and area is on target"
    )
    return RecommendationsDocument(
        student_id=body.student_id,
        tenant=principal.tenant,
        mastery=explain(state, model).mastery,
        target=TARGET,
        message=message,
        recommendations=[
            Recommendation(
                component=r.component.value,
                area=r.area,
                action=r.action.value,
                priority=r.priority.value,
                estimated_minutes=r.estimated_minutes,
                reason=r.reason,
                score=r.score,
                observed=r.observed,
                impact=r.impact,
            )
            for r in items
        ],
        version=state.version,
    )


recommend_adaptive = student_endpoint(StudentRequest, recommendations_of, read_state=True)

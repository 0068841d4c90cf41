"""``POST /analytics/compare``: a student next to their class's or school's cohort.

Figures come from the cohort indexes the event handlers keep (``mastery.store``), so a
comparison costs one Redis call whatever the school's size. Cohorts smaller than
``MASTERY_MIN_COHORT`` report the student's own values only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mastery.domain.cohort import compare
from mastery.events.models import EventId
from mastery.policy import Action, Role
from mastery.web.app import json_response, read_body
from mastery.web.auth import authorize_student, precheck
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Set

    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["CompareRequest", "compare_cohort"]


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId
    scope: Literal["class", "school"] = "school"
    class_id: EventId | None = None
    """For ``scope: class``: one of the student's classes (default: the first the caller
    may see, by name)."""

    @model_validator(mode="after")
    def _class_needs_class_scope(self) -> CompareRequest:
        if self.class_id is not None and self.scope != "class":
            raise ValueError("class_id applies to scope 'class' only")
        return self


async def compare_cohort(request: Request, ctx: Context) -> Response:
    principal = await ctx.principal(request)
    res = ctx.resources
    body = await read_body(request, CompareRequest, res.settings.max_body_bytes)
    ctx.students.append(body.student_id)
    precheck(principal, Action.READ, body.student_id)
    if principal.role is Role.TEACHER and body.class_id not in (None, *principal.classes):
        raise Problem(403, "a teacher may compare within their own classes only")
    state = await res.store.load(principal.tenant, body.student_id)
    if state is None:
        raise Problem(404, "no mastery data for this student")
    authorize_student(principal, body.student_id, state.classes)

    class_id = _class_of(principal, body, state.classes) if body.scope == "class" else None
    size, figures = await res.store.compare(
        principal.tenant, class_id, body.student_id, datetime.now(UTC)
    )
    if figures is None:  # indexed with their first event: only a race with expiry gets here
        raise Problem(404, "no cohort data for this student")
    result = compare(size, figures, res.settings.min_cohort)
    doc: dict[str, object] = {
        "student_id": body.student_id,
        "tenant": principal.tenant,
        "scope": body.scope,
        "class_id": class_id,
        "cohort_size": size,
        "student": dict(result.student),
        "cohort": None,
    }
    if result.metrics is None:
        doc["message"] = (
            f"cohort smaller than {result.minimum} students: statistics withheld for privacy"
        )
    else:
        doc["cohort"] = {
            m: {"mean": c.mean, "median": c.median, "percentile": c.percentile}
            for m, c in result.metrics.items()
        }
    return json_response(doc)


def _class_of(principal: Principal, body: CompareRequest, student_classes: Set[str]) -> str:
    """The class to compare within: named, or the first one the caller may see."""
    visible = principal.classes if principal.role is Role.TEACHER else student_classes
    if body.class_id is not None:
        if body.class_id not in student_classes:
            raise Problem(403, "the student is not in this class")
        return body.class_id
    shared = sorted(student_classes & visible)
    if not shared:
        raise Problem(422, "the student is in no class; compare with scope 'school'")
    return shared[0]

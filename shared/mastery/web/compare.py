"""``POST /analytics/compare``: a student next to their class's or school's cohort.

Figures come from the cohort indexes the event handlers keep (``mastery.store``), so a
comparison costs one Redis call whatever the school's size. Cohorts smaller than
``MASTERY_MIN_COHORT`` report the student's own values only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.domain.cohort import compare
from mastery.policy import Role
from mastery.web.problems import Problem
from mastery.web.requests import CompareRequest
from mastery.web.responses import CohortFigures, CompareDocument
from mastery.web.student import require_visible, student_endpoint, student_state

if TYPE_CHECKING:
    from collections.abc import Set

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["compare_cohort", "comparison_of"]


async def comparison_of(
    ctx: Context, principal: Principal, body: CompareRequest
) -> CompareDocument:
    """The student next to their cohort's statistics."""
    if principal.role is Role.TEACHER and body.class_id not in (None, *principal.classes):
        raise Problem(403, "a teacher may compare within their own classes only")
    res = ctx.resources
    found = await student_state(ctx, principal, body.student_id)
    state = require_visible(principal, body.student_id, found)

    class_id = _class_of(principal, body, state.classes) if body.scope == "class" else None
    size, figures = await res.store.compare(
        principal.tenant, class_id, body.student_id, res.clock()
    )
    if figures is None:  # indexed with their first event: only a race with expiry gets here
        raise Problem(404, "no cohort data for this student")
    result = compare(size, figures, res.settings.min_cohort)
    if result.metrics is None:
        cohort = None
        withheld = {
            "message": f"cohort smaller than {result.minimum} students: "
            "statistics withheld for privacy"
        }
    else:
        cohort = {
            m: CohortFigures(mean=c.mean, median=c.median, percentile=c.percentile)
            for m, c in result.metrics.items()
        }
        withheld = {}
    return CompareDocument(
        student_id=body.student_id,
        tenant=principal.tenant,
        scope=body.scope,
        class_id=class_id,
        cohort_size=size,
        student=dict(result.student),
        cohort=cohort,
        **withheld,
    )


compare_cohort = student_endpoint(CompareRequest, comparison_of, read_state=True)


def _class_of(principal: Principal, body: CompareRequest, student_classes: Set[str]) -> str:
    """The class to compare within: named, or the first one the caller may see."""
    visible = principal.classes if principal.role is Role.TEACHER else student_classes
    if body.class_id is not None:
        if body.class_id not in student_classes:
            raise Problem(403, "the student is not in this class")
        return body.class_id
    shared = sorted(student_classes & visible)
    if not shared:
        message = "the student is in no class; compare with scope 'school'"
        raise Problem(422, message, errors=[{"field": "scope", "message": message}])
    return shared[0]

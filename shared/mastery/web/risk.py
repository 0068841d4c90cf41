"""Students at risk: those of a class (or the school) whose prediction flags an intervention.

A teacher or admin operation on many students, so it follows the batch policy
(``Action.BATCH``: each student checked like a single read, students may not). Each
student's prediction is ``prediction_of``'s (``prediction_from``), from the cache when it
was made from the current state, and cached when it was not. Bounded: at most
``CANDIDATES_MAX`` students are looked at, read ``batch_chunk`` at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mastery.policy import Action, Role, allowed, may_act
from mastery.store import keys
from mastery.web.prediction import CACHE_TTL_S, prediction_from
from mastery.web.problems import Problem
from mastery.web.requests import RiskRequest

if TYPE_CHECKING:
    from mastery.web.app import Context
    from mastery.web.auth import Principal
    from mastery.web.responses import PredictionDocument

__all__ = ["CANDIDATES_MAX", "students_at_risk"]

#: Most students one request looks at (as many as a batch run takes).
CANDIDATES_MAX = 1000


async def students_at_risk(ctx: Context, principal: Principal, body: RiskRequest) -> dict[str, Any]:
    """The flagged students, highest risk (lowest predicted mastery) first, at most ``limit``."""
    if not may_act(principal.role, Action.BATCH):
        raise Problem(403, f"a {principal.role} may not list other students")
    if principal.role is Role.TEACHER and body.class_id not in (None, *principal.classes):
        raise Problem(403, "a teacher may look within their own classes only")
    candidates, complete = await _candidates(ctx, principal, body.class_id)
    res, tenant = ctx.resources, principal.tenant
    today = res.clock().date()
    flagged: list[PredictionDocument] = []
    checked = 0
    chunk = max(1, res.settings.batch_chunk)
    for start in range(0, len(candidates), chunk):
        students = candidates[start : start + chunk]
        found = await res.store.days_of_many(tenant, students)
        stale: list[tuple[str, str, bytes]] = []
        for student, days in zip(students, found, strict=True):
            p = principal
            if days is None or not allowed(
                p.role, p.subject, p.classes, Action.BATCH, student, days.classes
            ):
                continue  # expired since indexed, or not the caller's to see
            checked += 1
            doc, entry = prediction_from(days, student, tenant, today, res.model)
            if entry is not None:
                stale.append((student, days.stamp, entry))
            if doc.intervention_needed:
                flagged.append(doc)
        await res.store.cache(keys.prediction, tenant, stale, CACHE_TTL_S)
    flagged.sort(key=lambda d: (d.predicted_mastery, d.slope_per_day, d.student_id))
    shown = flagged[: body.limit]
    ctx.students.extend(d.student_id for d in shown)
    return {
        "tenant": tenant,
        "class_id": body.class_id,
        "checked": checked,
        "flagged": len(flagged),
        "complete": complete,
        "students": [d.model_dump(by_alias=True) for d in shown],
    }


async def _candidates(
    ctx: Context, principal: Principal, class_id: str | None
) -> tuple[list[str], bool]:
    """Who to look at, and whether that is everyone in scope (not cut at ``CANDIDATES_MAX``)."""
    store, tenant = ctx.resources.store, principal.tenant
    if class_id is None and principal.role is not Role.TEACHER:
        lowest = await store.lowest_mastery(tenant, CANDIDATES_MAX + 1)
        return lowest[:CANDIDATES_MAX], len(lowest) <= CANDIDATES_MAX
    classes = [class_id] if class_id is not None else sorted(principal.classes)
    members: set[str] = set()
    for c in classes:
        members.update(await store.class_members(tenant, c))
    ordered = sorted(members)
    return ordered[:CANDIDATES_MAX], len(ordered) <= CANDIDATES_MAX

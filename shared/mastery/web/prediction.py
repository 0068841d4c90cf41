"""``POST /predictions/next-week``: predicted mastery in 7 days, cached per state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from mastery.domain import predict
from mastery.store import keys
from mastery.web.requests import StudentRequest
from mastery.web.responses import PredictionDocument
from mastery.web.student import require_visible, student_endpoint

if TYPE_CHECKING:
    from datetime import date

    from mastery.domain import Prediction, ScoringModel
    from mastery.store import StudentDays
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = [
    "CACHE_TTL_S",
    "predict_next_week",
    "prediction_document",
    "prediction_from",
    "prediction_of",
]

CACHE_TTL_S = 3600


async def prediction_of(
    ctx: Context, principal: Principal, body: StudentRequest
) -> PredictionDocument:
    """The 7-day prediction, from the cache when it was made from this state (``prediction``)."""
    tenant, student = principal.tenant, body.student_id
    store = ctx.resources.store
    found = await store.days_of(tenant, student, cache=keys.prediction)
    days = require_visible(principal, student, found)
    doc, entry = prediction_from(
        days, student, tenant, ctx.resources.clock().date(), ctx.resources.model
    )
    if entry is not None:
        await store.cache(keys.prediction, tenant, [(student, days.stamp, entry)], CACHE_TTL_S)
    return doc


def prediction_from(
    days: StudentDays, student_id: str, tenant: str, today: date, model: ScoringModel
) -> tuple[PredictionDocument, bytes | None]:
    """The answer for ``days`` (read with their cached prediction), and a cache entry to
    store when the cached one was missing or stale (``None`` when it served)."""
    cached = _from_cache(days.cached, days.stamp, today)
    if cached is not None:
        return cached, None
    made = predict(days.activity, today, model)
    doc = prediction_document(student_id, tenant, days.version, made, model)
    entry = {"stamp": days.stamp, "day": today.isoformat(), "doc": doc}
    return PredictionDocument.model_validate({**doc, "cached": False}), orjson.dumps(entry)


predict_next_week = student_endpoint(StudentRequest, prediction_of)


def _from_cache(entry: bytes | None, stamp: str, today: date) -> PredictionDocument | None:
    """The cached answer if it was made from this state (``StudentDays.stamp``: its
    version, and which of the student's states across erasures) today, else ``None``.

    The day matters too: the same history predicts from a different "today" tomorrow.
    An entry that does not parse, or not as the answer (made by another release), is a
    miss, and gets overwritten.
    """
    if entry is None:
        return None
    try:
        parsed = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if (
        isinstance(parsed, dict)
        and parsed.get("stamp") == stamp
        and parsed.get("day") == today.isoformat()
        and isinstance(parsed.get("doc"), dict)
    ):
        try:
            return PredictionDocument.model_validate({**parsed["doc"], "cached": True})
        except ValidationError:
            return None
    return None


def prediction_document(
    student_id: str, tenant: str, version: int, p: Prediction, model: ScoringModel
) -> dict[str, Any]:
    """The answer's members but ``cached``: what the cache keeps."""
    return {
        "student_id": student_id,
        "tenant": tenant,
        "current_mastery": p.current,
        "predicted_mastery": p.predicted,
        "predicted_level": model.level(p.predicted).value,
        "predicted_for": p.horizon.isoformat(),
        "trend": p.trend.value,
        "slope_per_day": p.slope_per_day,
        "confidence": p.confidence,
        "intervention_needed": p.intervention_needed,
        "intervention_reason": p.intervention_reason,
        "history": {
            "from": p.history_from.isoformat() if p.history_from else None,
            "to": p.history_to.isoformat() if p.history_to else None,
            "days_with_data": p.days_with_data,
        },
        "version": version,
    }

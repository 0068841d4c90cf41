"""``POST /analytics/mastery-history``: mastery per day, week or month, as JSON, CSV or NDJSON."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from mastery.domain import Component, end_of_day, mastery_history
from mastery.store import keys
from mastery.web.app import model_response
from mastery.web.requests import HistoryRequest
from mastery.web.responses import Bucket as BucketDocument
from mastery.web.responses import HistoryDocument, HistorySummary
from mastery.web.student import read_student_request, require_visible

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import date

    from starlette.requests import Request

    from mastery.domain import Bucket, History, ScoringModel
    from mastery.store import StudentDays
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = [
    "history_document",
    "history_of",
    "history_rows",
    "mastery_history_report",
]

CACHE_TTL_S = 3600
CSV = "text/csv; charset=utf-8"
NDJSON = "application/x-ndjson"
_NAMES = tuple((c, c.value) for c in Component)  # Enum.value is a slow descriptor
_COLUMNS = ["student_id", "start", "end", "days", "mastery", *(name for _, name in _NAMES)]


async def mastery_history_report(request: Request, ctx: Context) -> Response:
    principal, body = await read_student_request(request, ctx, HistoryRequest)
    if body.format == "json":
        return await _json_answer(ctx, principal, body)
    h, _ = await history_of(ctx, principal, body)
    if body.format == "csv":
        rows = history_rows(body.student_id, h)
        out = io.StringIO()
        writer = csv.DictWriter(out, _COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
        return _attachment(out.getvalue().encode(), CSV, body.student_id, "csv")
    lines = b"".join(orjson.dumps(r) + b"\n" for r in history_rows(body.student_id, h))
    return _attachment(lines, NDJSON, body.student_id, "ndjson")  # format ndjson


async def _json_answer(ctx: Context, principal: Principal, body: HistoryRequest) -> Response:
    """The JSON answer, from the cache when it was made from this state (its
    ``StudentDays.stamp``), today, for this range (``keys.history``: the last one asked,
    after a line naming those)."""
    tenant, student = principal.tenant, body.student_id
    days, today = await _visible_days(ctx, principal, body, cache=keys.history)
    tag = f"{days.stamp} {today.isoformat()} {body.days} {body.granularity}\n".encode()
    if days.cached is not None and days.cached.startswith(tag):
        return Response(days.cached[len(tag) :], 200, media_type="application/json")
    h = _history(days, today, body, ctx.resources.model)
    answer = model_response(history_document(student, tenant, h, days.version))
    entry = (student, days.stamp, tag + answer.body)
    await ctx.resources.store.cache(keys.history, tenant, [entry], CACHE_TTL_S)
    return answer


async def history_of(
    ctx: Context, principal: Principal, body: HistoryRequest
) -> tuple[History, int]:
    """The student's history over ``body.days`` by ``body.granularity``, and its state version."""
    days, today = await _visible_days(ctx, principal, body)
    return _history(days, today, body, ctx.resources.model), days.version


def _history(days: StudentDays, today: date, body: HistoryRequest, model: ScoringModel) -> History:
    """The day records folded with the configured model, bucketed as ``body`` asks."""
    snapshots = end_of_day(days.activity, model)
    return mastery_history(snapshots, today, body.days, body.granularity, model)


async def _visible_days(
    ctx: Context,
    principal: Principal,
    body: HistoryRequest,
    cache: Callable[[str, str], str] | None = None,
) -> tuple[StudentDays, date]:
    """The student's day records (and ``cache``'s entry), read only to be shown to a caller
    who may see them (404 / 403 otherwise), and today's date."""
    found = await ctx.resources.store.days_of(principal.tenant, body.student_id, cache=cache)
    return require_visible(principal, body.student_id, found), ctx.resources.clock().date()


def history_document(student_id: str, tenant: str, h: History, version: int) -> HistoryDocument:
    """The JSON answer."""
    s = h.summary
    return HistoryDocument(
        student_id=student_id,
        tenant=tenant,
        from_=h.start.isoformat(),
        to=h.end.isoformat(),
        granularity=h.granularity,
        series=[_bucket(b) for b in h.buckets],
        summary=HistorySummary(
            count=s.count,
            min=s.min,
            max=s.max,
            mean=s.mean,
            stdev=s.stdev,
            first=s.first,
            last=s.last,
            change=s.change,
        )
        if s
        else None,
        trend=h.trend,
        slope_per_day=h.slope_per_day,
        version=version,
    )


def history_rows(student_id: str, h: History) -> list[dict[str, Any]]:
    """One flat row per bucket: what CSV and NDJSON carry (no summary: compute it from these)."""
    return [
        {
            "student_id": student_id,
            "start": b.start.isoformat(),
            "end": b.end.isoformat(),
            "days": b.days,
            "mastery": b.mastery,
            **{name: b.components.get(c) for c, name in _NAMES},
        }
        for b in h.buckets
    ]


def _bucket(b: Bucket) -> BucketDocument:
    return BucketDocument(
        start=b.start.isoformat(),
        end=b.end.isoformat(),
        days=b.days,
        mastery=b.mastery,
        components={name: b.components.get(c) for c, name in _NAMES},
    )


def _attachment(body: bytes, media_type: str, student_id: str, ext: str) -> Response:
    # Ids are validated ([A-Za-z0-9][A-Za-z0-9_.@-]*), so they are safe in the header.
    disposition = f'attachment; filename="mastery-history-{student_id}.{ext}"'
    return Response(body, 200, {"Content-Disposition": disposition}, media_type=media_type)

"""``POST /audit/recent``: the caller's tenant's most recent audit records, newest first.

Two trails, merged by time: access records (who read what, ``mastery.web.access``) from
the ``mastery.audit`` topic, and event outcomes (applied, duplicate, rejected) from the
tenant's Redis stream. Only the tenant of the token is read, on both.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mastery.events.access_log import AccessScan
from mastery.policy import Action
from mastery.store.audit import OutcomeScan, recent_outcomes
from mastery.web.app import model_response, read_body
from mastery.web.auth import precheck
from mastery.web.requests import AuditRequest
from mastery.web.responses import AuditDocument

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.store.audit import OutcomeEntry
    from mastery.web.app import Context

__all__ = ["recent_audit"]


async def recent_audit(request: Request, ctx: Context) -> Response:
    principal = await ctx.principal(request)
    body = await read_body(request, AuditRequest, ctx.resources.settings.max_body_bytes)
    if body.student_id is not None:
        ctx.students.append(body.student_id)
    precheck(principal, Action.AUDIT)
    access, events = await asyncio.gather(
        _access(ctx, principal.tenant, body), _events(ctx, principal.tenant, body)
    )
    merged = sorted(
        [
            *((e.timestamp_ms, e.offset, e.record) for e in access.entries),
            *((e.at_ms, e.sequence, _event_record(e)) for e in events.entries),
        ],
        key=lambda r: (r[0], r[1]),
        reverse=True,
    )
    return model_response(
        AuditDocument(
            tenant=principal.tenant,
            records=[doc for _, _, doc in merged[: body.limit]],
            complete=access.complete and events.complete,
        )
    )


async def _access(ctx: Context, tenant: str, body: AuditRequest) -> AccessScan:
    if body.kind == "events":
        return AccessScan([], complete=True)
    return await ctx.resources.access_log.recent(
        tenant, body.limit, since_ms=_ms(body.since), student_id=body.student_id
    )


async def _events(ctx: Context, tenant: str, body: AuditRequest) -> OutcomeScan:
    if body.kind == "access":
        return OutcomeScan([], complete=True)
    res = ctx.resources
    return await recent_outcomes(
        res.store,
        tenant,
        body.limit,
        since_ms=_ms(body.since),
        student_id=body.student_id,
        scan_max=res.settings.audit_scan_max,
    )


def _event_record(entry: OutcomeEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "event",
        "at": datetime.fromtimestamp(entry.at_ms / 1000, UTC).isoformat(),
        "id": entry.id,
        "outcome": entry.outcome,
    }
    if entry.reason is not None:
        doc["reason"] = entry.reason
    doc["event"] = entry.event
    return doc


def _ms(at: datetime | None) -> int | None:
    """Milliseconds since the epoch; nothing is older than the epoch (stream ids start there)."""
    return None if at is None else max(0, int(at.timestamp() * 1000))

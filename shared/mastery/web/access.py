"""The access audit: one record per request to a data function, allowed or not.

Records go to the ``mastery.audit`` topic (key: the tenant). The write is part of the
request: a response is sent only once the broker has acknowledged its record, and when
the record cannot be written the caller gets a 503 instead of the data (fail closed).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from mastery.ports import OutMessage
from mastery.topics import AUDIT_TOPIC

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mastery.web.auth import Principal

__all__ = ["access_record", "outcome_of"]


def outcome_of(status: int) -> str:
    if status < 400:
        return "allowed"
    return {401: "unauthenticated", 403: "denied", 404: "not_found", 429: "rate_limited"}.get(
        status, "error" if status >= 500 else "invalid"
    )


def access_record(
    *,
    function: str,
    route: str,
    correlation_id: str,
    principal: Principal | None,
    students: Sequence[str],
    status: int,
    at: datetime,
) -> OutMessage:
    """Who (subject, role, tenant) did what (function, route) to whom, with what outcome."""
    tenant = principal.tenant if principal else None
    doc = {
        "kind": "access",
        "at": at,
        "function": function,
        "route": route,
        "correlation_id": correlation_id,
        "subject": principal.subject if principal else None,
        "actor": principal.actor if principal else None,
        "role": principal.role.value if principal else None,
        "tenant": tenant,
        "students": list(students),
        "outcome": outcome_of(status),
        "status": status,
    }
    return OutMessage(AUDIT_TOPIC, orjson.dumps(doc), (tenant or "_").encode())

"""Reading a tenant's event audit stream (``m:{<tenant>}:audit``) back, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from mastery.paging import FIRST_PAGE, GrowingPages
from mastery.store import keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mastery.store.connection import RedisConnection

__all__ = ["OutcomeEntry", "OutcomeScan", "recent_outcomes"]


@dataclass(frozen=True, slots=True)
class OutcomeEntry:
    """One event's outcome as the apply script or the ingest path recorded it."""

    id: str
    """The stream entry id: ``<milliseconds>-<sequence>`` on Redis's clock."""
    outcome: str
    reason: str | None
    event: dict[str, Any]

    @property
    def at_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    @property
    def sequence(self) -> int:
        return int(self.id.split("-", 1)[1])


@dataclass(frozen=True, slots=True)
class OutcomeScan:
    entries: list[OutcomeEntry]
    """Newest first, at most ``limit``."""
    complete: bool
    """False when ``scan_max`` entries were read before ``limit`` matched or the stream ended."""


async def recent_outcomes(
    store: RedisConnection,
    tenant: str,
    limit: int,
    *,
    since_ms: int | None = None,
    student_id: str | None = None,
    scan_max: int = 50_000,
) -> OutcomeScan:
    """The tenant's newest event outcomes, optionally only since a time or of one student.

    Unfiltered, one ``XREVRANGE ... COUNT limit``; with a student, pages that grow until
    ``limit`` match, the stream ends or ``scan_max`` entries were read.

    Raises:
        Unavailable: Redis cannot be reached.
    """
    key = keys.audit(tenant)
    newest, oldest = "+", "-" if since_ms is None else str(since_ms)
    pages = GrowingPages(limit if student_id is None else max(limit, FIRST_PAGE), scan_max)
    found: list[OutcomeEntry] = []
    while count := pages.next():
        rows = await store.io(store.client.xrevrange(key, newest, oldest, count=count)) or []
        pages.spent(len(rows))
        for raw_id, fields in rows:
            if raw_id is None:
                continue
            entry = _entry(raw_id, fields or {})
            if student_id is None or entry.event.get("student_id") == student_id:
                found.append(entry)
                if len(found) == limit:
                    return OutcomeScan(found, True)
        if len(rows) < count:
            return OutcomeScan(found, True)
        newest = f"({_text(rows[-1][0] or b'')}"
    return OutcomeScan(found, False)


def _entry(raw_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> OutcomeEntry:
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        event = orjson.loads(values.get("event", "{}"))
    except orjson.JSONDecodeError:
        event = {}
    return OutcomeEntry(
        id=_text(raw_id),
        outcome=values.get("outcome", ""),
        reason=values.get("reason"),
        event=event if isinstance(event, dict) else {},
    )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value

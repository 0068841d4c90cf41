"""Erasing a student: every key, every cohort index, a tombstone, their audit entries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.store import keys
from mastery.store.connection import RedisConnection
from mastery.store.records import about, as_bytes
from mastery.store.scripts import ERASE

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["AuditEntry", "Erasure"]

AuditEntry = tuple[str, dict[str, str]]
"""An event-audit stream entry: its id and fields (``outcome``, ``event``, ``reason``)."""


class Erasure(RedisConnection):
    """GDPR erasure of one student, and the audit entries it must redact."""

    _ttl_s: int

    async def erase(self, tenant: str, student: str, now: datetime) -> int:
        """Delete every key of the student, atomically, and leave a tombstone.

        Returns how many keys existed (0 when nothing was held).
        Raises:
            Unavailable: Redis cannot be reached; nothing was erased, retry.
        """
        now_s = now.timestamp()
        key_list = [
            *keys.tenant_keys(tenant),
            *keys.student_keys(tenant, student, now_s, self._ttl_s),
        ]
        args = (keys.tenant_prefix(tenant), student, int(now_s * 1000), self._ttl_s)
        return int(await self.run(ERASE, key_list, args))

    async def audit_entries(self, tenant: str, student: str, page: int = 1000) -> list[AuditEntry]:
        """The tenant's event-audit entries about ``student``, oldest first.

        Reads the stream in pages (it is bounded by ``audit_maxlen`` and the window).
        """
        found: list[AuditEntry] = []
        start = "-"
        while True:
            entries = await self.io(self._redis.xrange(keys.audit(tenant), start, "+", page)) or []
            for entry_id, raw in entries:
                fields = {
                    as_bytes(k).decode(): as_bytes(v).decode() for k, v in (raw or {}).items()
                }
                if about(fields.get("event", ""), student):
                    found.append((as_bytes(entry_id).decode(), fields))
            if len(entries) < page:
                return found
            start = "(" + as_bytes(entries[-1][0]).decode()

    async def redact_audit(self, tenant: str, entry_ids: Sequence[str]) -> int:
        """Delete these event-audit entries (an erased student's); returns how many went."""
        if not entry_ids:
            return 0
        return int(await self.io(self._redis.xdel(keys.audit(tenant), *entry_ids)))

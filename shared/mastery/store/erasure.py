"""A student's GDPR rights in the store: erasing every key, cohort index entry and audit
entry (with a tombstone), and reading what an export holds beyond the state and days."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from mastery.errors import Unavailable
from mastery.store import keys
from mastery.store.connection import RedisConnection
from mastery.store.records import StatementRecord, about, as_bytes, dated_after, parse_statements
from mastery.store.scripts import ERASE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["AuditEntry", "Bookkeeping", "Erasure"]

AuditEntry = tuple[str, dict[str, str]]
"""An event-audit stream entry: its id and fields (``outcome``, ``event``, ``reason``)."""

Bookkeeping = tuple[list[StatementRecord], list[int]]
"""What the store keeps to count each event once: the xAPI statements' records (what each
added, to undo it on voiding) and the event-id hashes (``keys.event_hash``)."""


class Erasure(RedisConnection):
    """GDPR: erasure of one student and the audit entries it must redact; the reads an
    export adds to the state and days."""

    _ttl_s: int

    async def erase(self, tenant: str, student: str, now: datetime) -> tuple[int, datetime]:
        """Delete every key of the student, atomically, and leave a tombstone.

        Returns how many keys existed (0 when nothing was held), and the time through
        which the student's events are erased (refused when delivered again, taken out of
        the event audit): ``now``, or the newest event the erased state held when it is
        stamped later (events may be ``max_clock_skew`` ahead of the clock applying them).
        Raises:
            Unavailable: Redis cannot be reached; nothing was erased, retry.
        """
        now_s = now.timestamp()
        key_list = [
            *keys.tenant_keys(tenant),
            *keys.student_keys(tenant, student, now_s),
        ]
        args = (keys.tenant_prefix(tenant), student, int(now_s * 1000), self._ttl_s)
        deleted, through_ms = await self.run(ERASE, key_list, args)
        return int(deleted), max(now, datetime.fromtimestamp(int(through_ms) / 1000, UTC))

    async def replicated(self, tenant: str, replicas: int, timeout_ms: int) -> int:
        """How many replicas of the tenant's master hold everything written to it so far:
        ``WAIT replicas timeout_ms``, at most ``replicas``.

        ``WAIT`` counts the replicas that acknowledged its own connection's last write, so
        one connection sends a write first: the tombstones' TTL, set again. A master
        replicates in order, so a replica that has it has every earlier write of the
        tenant too (the erasure's, whichever connection made them).

        Raises:
            Unavailable: Redis cannot be reached, or the tenant's slot moved; retry.
        """
        key = keys.erased(tenant)
        commands = [("EXPIRE", key, self._ttl_s), ("WAIT", replicas, timeout_ms)]
        conn, give_back = await self._connection_for(key)
        answered = False
        try:
            acked = await self.io(_exchange(conn, commands))
            answered = True
        except redis.exceptions.ResponseError as exc:  # MOVED: the slot is elsewhere now
            answered = True
            raise Unavailable(f"redis: {exc}") from exc
        finally:
            if not answered:  # cut off mid-reply: the connection's stream is unusable
                await conn.disconnect()
            await give_back(conn)
        return int(acked)

    async def _connection_for(self, key: str) -> tuple[Any, Callable[[Any], Awaitable[None]]]:
        """A connection of its own to the master serving ``key``, and how to give it back."""
        client = self._redis
        if not isinstance(client, RedisCluster):
            pool = client.connection_pool
            return await self.io(pool.get_connection()), pool.release  # type: ignore[no-untyped-call]
        node = client.get_node_from_key(key)
        if node is None:
            raise Unavailable("redis: no cluster node serves the tenant's slot")

        async def give_back(conn: Any) -> None:
            node.release(conn)

        return node.acquire_connection(), give_back

    async def bookkeeping(self, tenant: str, student: str, now: datetime) -> Bookkeeping:
        """The student's xAPI statement records and seen event-id hashes, one round trip."""
        async with self.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.xapi(tenant, student))
            for key in keys.seen_keys(tenant, student, now.timestamp()):
                pipe.smembers(key)
            statements, *buckets = await self.io(pipe.execute())
        hashes = [int(h) for bucket in buckets for h in bucket]
        return parse_statements(statements or {}), hashes

    async def audit_entries(
        self, tenant: str, student: str, page: int = 1000, *, erased_at: datetime | None = None
    ) -> list[AuditEntry]:
        """The tenant's event-audit entries about ``student``, oldest first; with
        ``erased_at``, those an erasure at that time takes away: not those of events dated
        after it, the student's new data, applied while the stream is walked or since.

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
                event = fields.get("event", "")
                if about(event, student) and not (erased_at and dated_after(event, erased_at)):
                    found.append((as_bytes(entry_id).decode(), fields))
            if len(entries) < page:
                return found
            start = "(" + as_bytes(entries[-1][0]).decode()

    async def redact_audit(self, tenant: str, entry_ids: Sequence[str]) -> int:
        """Delete these event-audit entries (an erased student's); returns how many went."""
        if not entry_ids:
            return 0
        return int(await self.io(self._redis.xdel(keys.audit(tenant), *entry_ids)))


async def _exchange(conn: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """Send ``commands`` on one connection, read every reply; the last one's value."""
    await conn.send_packed_command(conn.pack_commands(commands))
    replies = [await conn.read_response() for _ in commands]
    return replies[-1]

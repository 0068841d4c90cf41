"""Applying event batches: one atomic script call per tenant, audits, the level outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import redis.exceptions

from mastery.domain import DEFAULT_MODEL, Component
from mastery.domain.days import day_number, score_units
from mastery.domain.scoring import DECAY_ORIGIN
from mastery.errors import OffsetsMoved, Unavailable
from mastery.offsets import CATCH_ALL
from mastery.ports import Applied, Note, Outcome, Unapplied
from mastery.store import keys
from mastery.store.connection import DOWN, RedisConnection
from mastery.store.records import as_bytes, held_digest
from mastery.store.scripts import ADVANCE, APPLY, Script

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from mastery.domain import Observation, ScoringModel
    from mastery.offsets import OffsetBook

__all__ = ["UNKNOWN_TENANT", "Applied", "EventWrites", "Note", "Outcome", "Unapplied"]

_COMPONENTS = tuple(Component)
#: Undecodable events name no tenant; their audit records go here.
UNKNOWN_TENANT = CATCH_ALL


#: How old a level-change note must be, by Redis's clock, to be taken for one a cut-off
#: publish left (a crash, the broker away) and published by whoever comes next: a fresher
#: one is another writer's, about to be published by it (taking it too announced it twice).
LEFTOVER_MS = 5000

# The outbox's notes older than ARGV[1] ms by Redis's clock, at most ARGV[2], oldest first.
_LEFTOVERS = Script("""
local t = redis.call('TIME')
local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
return redis.call('XRANGE', KEYS[1], '-', string.format('%d', cut), 'COUNT', ARGV[2])
""")

# Enters tenants new to partitions in the catch-all's hash (ARGV[2..]: entry, offset, ...),
# each unless already held; the hash is kept ARGV[1] s.
_ENTER = Script("""
for i = 2, #ARGV, 2 do
  if not redis.call('HGET', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
""")


@dataclass(frozen=True, slots=True)
class _Call:
    """One script call of a batch: for a tenant's events, or its offsets alone."""

    tenant: str
    script: Script
    key_list: list[str]
    args: list[Any]
    slots: list[int]  # the events' places in the batch


class EventWrites(RedisConnection):
    """Applies batches of decoded events, at most once each, auditing every event."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        model: ScoringModel = DEFAULT_MODEL,
        audit_maxlen: int = 100_000,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(client, timeout_s)
        self._model = model
        self._audit_maxlen = audit_maxlen
        self._ttl_s = int(model.window.total_seconds())
        #: The apply script's arguments after ``now`` that only the model fixes.
        self._settled: tuple[Any, ...] = (
            self._ttl_s,
            model.window.days,
            audit_maxlen,
            int(DECAY_ORIGIN.timestamp()),
            *(c.value for c in _COMPONENTS),
            *(repr(model.weights[c]) for c in _COMPONENTS),
            orjson.dumps([[level.value, floor] for level, floor in model.level_floors]),
            model.class_lapse.days,
            LEFTOVER_MS,
        )

    async def apply(
        self,
        accepted: Sequence[tuple[Observation, bytes]],
        unapplied: Sequence[Unapplied],
        now: datetime,
        offsets: tuple[OffsetBook, Mapping[str, int]] | None = None,
        positions: Sequence[tuple[str, int]] | None = None,
    ) -> Applied:
        """Apply ``accepted`` events at most once each and audit every event (``unapplied``
        ones with their outcome and reason).

        One script call per tenant (each atomic, in the tenant's hash slot), all sent in
        one pipeline: one round trip per node. With ``offsets`` (the consumer's book and
        the batch's end per partition), each call also records the tenant's applied
        offsets, and the catch-all records them for the whole batch. ``positions``, each
        accepted event's partition field and offset: a tenant's offset stops at its first
        event the store refuses, so that the event is read again (and dead-lettered) by
        whoever resumes before its dead letter was published.

        Returns the outcome of each accepted event, in order, the level changes, and the
        events refused (``REJECTED``: a day record that holds no more, ``apply.lua``).
        Raises:
            Unavailable: Redis cannot be reached; retry the batch (what was applied comes
                back as duplicates).
            OffsetsMoved: a tenant's offsets are not what ``offsets``' book expects; the
                other tenants' calls are done and written in the book.
        """
        if offsets is not None and positions is not None:
            await self._enter_newcomers(offsets[0], _firsts(accepted, positions))
        calls = self._calls(accepted, now, offsets, positions)
        replies = await self._execute(calls, unapplied, now)
        outcomes: list[Outcome] = [Outcome.DUPLICATE] * len(accepted)
        notes: list[Note] = []
        backlog: set[str] = set()
        refused: dict[int, str] = {}
        moved: OffsetsMoved | None = None
        for call, reply in zip(calls, replies, strict=True):
            if _moved(call.tenant, reply):
                moved = moved or _moved(call.tenant, reply)
                continue
            if call.script is ADVANCE:
                if offsets is not None:
                    offsets[0].wrote(call.tenant, offsets[1])
                continue
            done, changes, leftover, why, written = reply
            if offsets is not None:
                offsets[0].wrote(call.tenant, _offsets_of(written))
            for slot, outcome in zip(call.slots, done, strict=True):
                outcomes[slot] = Outcome(as_bytes(outcome).decode())
            for place, reason in zip(why[::2], why[1::2], strict=True):
                refused[call.slots[place - 1]] = as_bytes(reason).decode()
            notes += [(call.tenant, as_bytes(i).decode(), as_bytes(n)) for i, n in changes]
            if leftover:
                backlog.add(call.tenant)
        if moved is not None:
            raise moved
        return Applied(outcomes, notes, frozenset(backlog), refused)

    async def conflicting(self, observations: Sequence[Observation]) -> list[int]:
        """The places of the xAPI statements whose id their student holds for a statement
        that says otherwise (``Observation.digest``): those ``apply`` would refuse, found
        before it (one round trip), so that a request can be refused whole. A read, not a
        claim: ``apply``'s own check, in the same atomic step as the write, decides.

        Raises:
            Unavailable: Redis cannot be reached.
        """
        asked = [i for i, obs in enumerate(observations) if obs.digest is not None]
        if not asked:
            return []
        async with self.pipeline(transaction=False) as pipe:
            for i in asked:
                obs = observations[i]
                field = str(keys.event_hash(obs.event_id))
                pipe.hget(keys.xapi(obs.tenant, obs.student_id), field)
            entries = await self.io(pipe.execute())
        return [
            i
            for i, entry in zip(asked, entries, strict=True)
            if (kept := held_digest(entry)) is not None and kept != observations[i].digest
        ]

    async def outbox(self, tenant: str, count: int | None = 100) -> list[tuple[str, bytes]]:
        """The tenant's oldest level-change notes not yet published: (entry id, JSON);
        ``count`` None: every one."""
        entries = await self.io(self._redis.xrange(keys.outbox(tenant), "-", "+", count)) or []
        return [(as_bytes(i).decode(), as_bytes((f or {})[b"note"])) for i, f in entries]

    async def leftovers(self, tenant: str, count: int = 100) -> list[tuple[str, bytes]]:
        """The tenant's oldest notes a cut-off publish left (``LEFTOVER_MS`` old or more):
        (entry id, JSON)."""
        entries = await self.run(_LEFTOVERS, [keys.outbox(tenant)], [LEFTOVER_MS, count])
        return [(as_bytes(i).decode(), _note(f)) for i, f in entries or []]

    async def pending_changes(self, tenant: str, student: str) -> list[bytes]:
        """The student's level changes not yet published (the outbox holds notes only while
        the broker is out of reach), oldest first: what a GDPR export shows of them."""
        notes = await self.outbox(tenant, count=None)
        return [n for _, n in notes if orjson.loads(n).get("student_id") == student]

    async def published(self, tenant: str, entry_ids: Sequence[str]) -> None:
        """Drop notes from the tenant's outbox once the broker has them."""
        if entry_ids:
            await self.io(self._redis.xdel(keys.outbox(tenant), *entry_ids))

    async def read_offsets(self, group: str) -> dict[tuple[str, str], int]:
        """Every tenant's applied offsets for ``group``: (tenant, partition field) -> offset."""
        suffix = f"}}:offsets:{group}"
        pattern = "m:{*" + "".join(f"\\{c}" if c in "*?[]\\" else c for c in suffix)
        known: dict[tuple[str, str], int] = {}
        for found in await self.scan(pattern):
            key = as_bytes(found).decode()
            tenant = key[len("m:{") : -len(suffix)]
            fields = await self.io(self._redis.hgetall(key))
            known |= {(tenant, as_bytes(f).decode()): int(o) for f, o in fields.items()}
        return known

    async def advance_offsets(
        self, book: OffsetBook, moves: Mapping[str, Mapping[str, int]]
    ) -> None:
        """Record each tenant's new applied offsets (it had no events before them), in one
        pipeline: ``moves`` maps a tenant to its partition fields' new offsets.

        Raises:
            OffsetsMoved: a tenant's stored offsets are not what ``book`` expects; the
                others are written.
        """
        calls = [self._advance_call(book, t, ends) for t, ends in moves.items()]
        moved: OffsetsMoved | None = None
        for call, reply in zip(calls, await self._execute(calls, [], None), strict=True):
            moved = moved or _moved(call.tenant, reply)
            if not _moved(call.tenant, reply):
                book.wrote(call.tenant, moves[call.tenant])
        if moved is not None:
            raise moved

    async def _enter_newcomers(
        self, book: OffsetBook, firsts: Mapping[str, Mapping[str, int]]
    ) -> None:
        """Before a consumer's batch applies, enter its tenants new to a partition in the
        catch-all (``OffsetBook.newcomers``), so that a failover losing their first write
        does not lose where to read their events again from; an entry already held is
        kept (it is as low or lower). One call, and only when there is a newcomer."""
        entries = book.newcomers(firsts)
        if not entries:
            return
        key = keys.offsets(CATCH_ALL, book.group)
        flat = [x for entry in entries.items() for x in entry]
        await self.run(_ENTER, [key], [self._ttl_s, *flat])
        book.wrote(CATCH_ALL, entries)

    def _advance_call(self, book: OffsetBook, tenant: str, ends: Mapping[str, int]) -> _Call:
        marks = orjson.dumps(book.marks(tenant, ends))
        return _Call(tenant, ADVANCE, [keys.offsets(tenant, book.group)], [self._ttl_s, marks], [])

    def _calls(
        self,
        accepted: Sequence[tuple[Observation, bytes]],
        now: datetime,
        offsets: tuple[OffsetBook, Mapping[str, int]] | None,
        positions: Sequence[tuple[str, int]] | None,
    ) -> list[_Call]:
        by_tenant: dict[str, list[int]] = {}
        for i, (obs, _) in enumerate(accepted):
            by_tenant.setdefault(obs.tenant, []).append(i)
        calls = [
            self._apply_call(t, s, accepted, now, offsets, positions) for t, s in by_tenant.items()
        ]
        if offsets is not None:
            calls.append(self._advance_call(offsets[0], CATCH_ALL, offsets[1]))
        return calls

    async def _execute(
        self, calls: Sequence[_Call], unapplied: Sequence[Unapplied], now: datetime | None
    ) -> list[Any]:
        """Send every call and the unapplied events' audits in one pipeline; the calls'
        replies.

        Plain EVALSHA: redis-py's Script objects add a SCRIPT EXISTS round trip. A call
        that meets NOSCRIPT (Redis restarted, or a replica was promoted) is sent again
        alone once its script is loaded; the others have run and are not repeated.
        A single call (one event over HTTP) goes without a pipeline: same round trip,
        ~10 us less of redis-py.
        """
        if len(calls) == 1 and not unapplied:
            [c] = calls
            return [await self.run(c.script, c.key_list, c.args)]
        async with self.pipeline(transaction=False) as pipe:
            for c in calls:
                pipe.execute_command("EVALSHA", c.script.sha, len(c.key_list), *c.key_list, *c.args)
            for tenant, outcome, reason, record in unapplied:
                pipe.xadd(
                    keys.audit(tenant or UNKNOWN_TENANT),
                    {"outcome": outcome.value, "reason": reason, "event": record},
                    maxlen=self._audit_maxlen,
                    approximate=True,
                )
            cutoff = int(now.timestamp() * 1000) - self._ttl_s * 1000 if now else 0
            for audit_key in {keys.audit(t or UNKNOWN_TENANT) for t, *_ in unapplied}:
                pipe.xtrim(audit_key, minid=cutoff, approximate=True)
                pipe.expire(audit_key, self._ttl_s)
            replies = await self.io(pipe.execute(raise_on_error=False))
        for reply in replies:
            if isinstance(reply, DOWN):
                raise Unavailable(f"redis: {type(reply).__name__}: {reply}")
            if isinstance(reply, Exception) and not isinstance(
                reply, redis.exceptions.NoScriptError
            ):
                raise reply
        out = list(replies[: len(calls)])
        for i, c in enumerate(calls):
            if isinstance(out[i], redis.exceptions.NoScriptError):
                out[i] = await self.run(c.script, c.key_list, c.args)
        return out

    def _apply_call(
        self,
        tenant: str,
        slots: list[int],
        accepted: Sequence[tuple[Observation, bytes]],
        now: datetime,
        offsets: tuple[OffsetBook, Mapping[str, int]] | None,
        positions: Sequence[tuple[str, int]] | None,
    ) -> _Call:
        group = offsets[0].group if offsets else ""
        marks = offsets[0].marks(tenant, offsets[1]) if offsets else []
        mark_of = {m[0]: i for i, m in enumerate(marks, start=1)}
        key_list = [*keys.tenant_keys(tenant), keys.offsets(tenant, group)]
        index: dict[str, int] = {}

        def ref(key: str) -> int:  # relative to the first student key (Lua adds the base)
            return index.setdefault(key, len(index) + 1)

        ttl = self._ttl_s
        events: list[list[object]] = []
        records: list[bytes] = []
        for slot in slots:
            obs, record = accepted[slot]
            s = obs.student_id
            at = obs.occurred_at.timestamp()
            bucket = keys.seen_bucket(int(at // 86400))
            # A bucket must outlive the window of its newest possible event.
            expire_at = (bucket + 1) * keys.SEEN_BUCKET_DAYS * 86400 + ttl
            inc = self._model.increment(obs)
            records.append(record)
            events.append(
                [
                    ref(keys.state(tenant, s)),
                    ref(keys.days(tenant, s)),
                    ref(keys.seen(tenant, s, bucket)),
                    str(keys.event_hash(obs.event_id)),  # a string: Lua numbers are doubles
                    expire_at,
                    at,
                    obs.component.value,
                    obs.area or "",
                    inc.weight,
                    inc.weighted_value,
                    obs.class_id or "",
                    s,
                    obs.event_id,
                    day_number(at),
                    score_units(obs.score),
                    ref(keys.xapi(tenant, s)) if obs.voidable or obs.voids else 0,
                    str(keys.event_hash(obs.voids)) if obs.voids else "",
                    obs.digest.hex() if obs.digest else "",  # cjson carries text, not bytes
                    *_position(positions, slot, mark_of),
                ]
            )
        args: list[Any] = [
            int(now.timestamp() * 1000),
            *self._settled,
            keys.tenant_prefix(tenant),
            orjson.dumps(marks),
            orjson.dumps(events),
            *records,
        ]
        return _Call(tenant, APPLY, [*key_list, *index], args, slots)


def _position(
    positions: Sequence[tuple[str, int]] | None, slot: int, mark_of: Mapping[str, int]
) -> tuple[int, int]:
    """An event's partition, as its place in the call's offset marks (0: none), and its
    offset: where its tenant's offset stops if the store refuses it (apply.lua)."""
    if positions is None:
        return 0, 0
    field, offset = positions[slot]
    return mark_of.get(field, 0), offset


def _firsts(
    accepted: Sequence[tuple[Observation, bytes]], positions: Sequence[tuple[str, int]]
) -> dict[str, dict[str, int]]:
    """Per tenant of the accepted events, per partition field, its first offset there."""
    firsts: dict[str, dict[str, int]] = {}
    for (obs, _), (field, offset) in zip(accepted, positions, strict=True):
        fields = firsts.setdefault(obs.tenant, {})
        fields[field] = min(fields.get(field, offset), offset)
    return firsts


def _note(fields: Sequence[Any]) -> bytes:
    """An outbox entry's note, from a script's flat field list."""
    flat = [as_bytes(x) for x in fields]
    return dict(zip(flat[::2], flat[1::2], strict=True))[b"note"]


def _offsets_of(written: Sequence[Any]) -> dict[str, int]:
    """The offsets a script call recorded, from its flat reply (field, offset, ...)."""
    return {as_bytes(f).decode(): int(o) for f, o in zip(written[::2], written[1::2], strict=True)}


def _moved(tenant: str, reply: list[Any]) -> OffsetsMoved | None:
    """The error a script's ``{'moved', field, stored}`` reply stands for, else ``None``."""
    if isinstance(reply[0], bytes | str) and as_bytes(reply[0]) == b"moved":
        field, stored = (as_bytes(x).decode() for x in reply[1:])
        return OffsetsMoved(tenant, field, stored)
    return None

"""The one path every learning event takes, whichever trigger delivered it.

decode -> dead-letter the bad ones (awaited) -> apply the good ones and audit all, in one
Redis round trip -> publish the level changes it recorded. A caller acknowledges its
records (commits offsets, answers 2xx) only after ``ingest`` returns, so a crash
anywhere before that redelivers, and redelivered events are recognised as duplicates.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from mastery import tracing
from mastery.domain import DEFAULT_MODEL, Level
from mastery.errors import IgnoredEvent, InvalidEvent, Unavailable
from mastery.events.codec import decode
from mastery.events.kafka import dead_letter, dead_line
from mastery.events.notifications import level_changed
from mastery.logs import logger
from mastery.metrics import (
    DEAD_LETTERS,
    EVENT_AGE,
    EVENTS,
    LEVEL_CHANGES,
    dlq_reason,
    event_outcome,
)
from mastery.offsets import partition_field
from mastery.ports import Outcome, OutMessage, utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from datetime import datetime

    from aws_lambda_powertools import Logger
    from opentelemetry.context import Context

    from mastery.domain import Observation, ScoringModel
    from mastery.offsets import OffsetBook
    from mastery.ports import Applied, Clock, EventStore, Publisher, Record, Unapplied

__all__ = ["Batch", "GroupCommit", "Ingestor", "Result", "Sweep", "audit_record"]

Result = tuple[Outcome, str | None]
"""An event's outcome and, when rejected, why."""

#: How often a process sweeps the outboxes of the tenants it knows for level changes a
#: cut-off publish left: a quiet tenant has no next batch to publish them.
_SWEEP_EVERY_S = 60.0
#: Outboxes a sweep reads at once: one after another, thousands of schools over a network
#: would not fit in its time (5,000 round trips of 0.5 ms: 2.5 s), and none would be
#: published.
_SWEEP_READS = 32
#: How long a sweep may take. A healthy one takes milliseconds (its Redis calls, a
#: publish); a broker that does not answer would hold it for 15 s (a publish's wait for
#: its reports), and an HTTP delivery sweeps before it answers.
_SWEEP_WITHIN_S = 2.0


@dataclass(slots=True)
class Batch:
    """Records decoded and sorted, ready to apply (``Ingestor.prepare``)."""

    now: datetime
    accepted: list[tuple[Observation, bytes]] = field(default_factory=list)
    sources: list[Record] = field(default_factory=list)
    """The record each accepted event came from (to dead-letter it if the store refuses it)."""
    unapplied: list[Unapplied] = field(default_factory=list)
    """Events that will not be applied (rejected, ignored): audited with the batch."""
    dead: list[OutMessage] = field(default_factory=list)
    dead_lines: list[dict[str, object]] = field(default_factory=list)
    """The log line of each of ``dead``, written once the DLQ has it."""
    slots: list[int | Result] = field(default_factory=list)
    """Per record: its index into ``accepted``, or its outcome (rejected, ignored) and why."""
    traces: list[Context | None] = field(default_factory=list)
    """Each record's producer context, when tracing is on (the apply span links them)."""

    def leave_out(self, outcome: Outcome, why: InvalidEvent | IgnoredEvent, audit: bytes) -> None:
        """A record not to apply: audited all the same (in the tenant's stream when it is
        known), its slot saying why."""
        self.unapplied.append((why.tenant, outcome, why.reason, audit))
        self.slots.append((outcome, why.reason))

    def refuse(self, record: Record, why: InvalidEvent, source: str) -> None:
        """A record that does not decode: dead-lettered, and audited all the same."""
        self.dead.append(dead_letter(record, why.reason, self.now, source))
        self.dead_lines.append(dead_line(record, why.reason, why.tenant, why.event_id))
        self.leave_out(Outcome.REJECTED, why, audit_record(record, None, self.now))


class Ingestor:
    """Decodes, dead-letters, applies and audits batches of records; publishes level changes."""

    def __init__(
        self,
        store: EventStore,
        publisher: Publisher,
        *,
        model: ScoringModel = DEFAULT_MODEL,
        clock: Clock = utc_now,
        source: str = "mastery",
        xapi_tenants: Mapping[str, str] | None = None,
        group_max: int = 1000,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._model = model
        self._clock = clock
        self._source = source
        self._xapi_tenants = dict(xapi_tenants or {})
        self._one = GroupCommit(self._ingest_delivered, group_max)
        self._delivered: set[str] = set()
        """Tenants of the records delivered to ``ingest_one``, entered before the apply:
        what its sweep looks at. A delivery whose publish was cut off was not answered
        2xx and comes again (a duplicate), to this process or another, which enters its
        tenant in turn."""
        self._sweep = Sweep(self, lambda: self._delivered, logger(source))

    async def ingest_one(self, record: Record) -> Result:
        """Apply one record delivered alone (an HTTP request): grouped with the records
        that arrive while an earlier group is in Redis (``GroupCommit``). Then, when one
        is due, sweep the outboxes of the tenants delivered here (``Sweep``): in the
        request, whose CPU a serverless platform grants, not between requests.

        Raises:
            Unavailable: Redis or the broker is down; nothing is acknowledged, retry it.
                Never for the sweep: its failure waits for the next one.
        """
        result = await self._one(record)
        await self._sweep.due()
        return result

    async def _ingest_delivered(self, records: Sequence[Record]) -> list[Result]:
        batch = self.prepare(records)
        self._delivered.update(obs.tenant for obs, _ in batch.accepted)
        return await self.apply(batch)

    async def ingest(
        self,
        records: Sequence[Record],
        offsets: tuple[OffsetBook, Mapping[str, int]] | None = None,
        *,
        tenant: str | None = None,
    ) -> list[Result]:
        """Apply a batch; one result per record, in order.

        ``offsets``: a consumer's book and the batch's end per partition, recorded with
        the events (``mastery.offsets``).
        Raises:
            Unavailable: Redis or the broker is down; nothing is acknowledged, retry the batch.
            OffsetsMoved: the consumer's view of the applied offsets is stale.
        """
        return await self.apply(self.prepare(records, tenant=tenant), offsets)

    def prepare(self, records: Sequence[Record], *, tenant: str | None = None) -> Batch:
        """Decode ``records``: the valid ones to apply, the others to dead-letter.

        ``tenant``: the verified caller's, for xAPI statements posted over HTTP.
        """
        now = self._clock()
        batch = Batch(now)
        xapi = self._xapi_tenants
        if tracing.enabled():
            batch.traces = [tracing.context_of(r.headers) for r in records]
        for record in records:
            try:
                obs = decode(record, now, self._model, tenant=tenant, xapi_tenants=xapi)
            except InvalidEvent as exc:
                batch.refuse(record, exc, self._source)
                continue
            except IgnoredEvent as exc:  # before Exception, which it is too
                batch.leave_out(Outcome.IGNORED, exc, audit_record(record, None, now, exc))
                continue
            except Exception as exc:  # a defect met by one record must not stop the rest
                refused = InvalidEvent(f"malformed: not decodable ({type(exc).__name__})")
                line = dead_line(record, refused.reason)
                logger(self._source).exception("event not decodable", extra=line)
                batch.refuse(record, refused, self._source)
                continue
            batch.slots.append(len(batch.accepted))
            batch.accepted.append((obs, audit_record(record, obs, now)))
            batch.sources.append(record)
        return batch

    async def apply(
        self, batch: Batch, offsets: tuple[OffsetBook, Mapping[str, int]] | None = None
    ) -> list[Result]:
        """Dead-letter, apply and audit a prepared batch, then publish its level changes."""
        if not tracing.enabled():
            return await self._apply(batch, offsets)
        # Inside a request (an HTTP delivery, which continues its event's trace) the
        # request's span is the parent; a consumer's batch starts a trace of its own,
        # except for a single traced event, whose trace it continues. Either links the
        # producers' contexts.
        traced = [t for t in batch.traces if t is not None]
        in_request = tracing.trace_id() is not None
        parent = traced[0] if len(traced) == 1 and not in_request else None
        with tracing.span(
            "mastery.apply_batch",
            kind=tracing.SpanKind.CONSUMER,
            parent=parent,
            links=traced,
            attributes={
                "messaging.batch.message_count": len(batch.slots),
                "mastery.accepted": len(batch.accepted),
                "mastery.rejected": len(batch.dead),
            },
        ):
            return await self._apply(batch, offsets)

    async def _apply(
        self, batch: Batch, offsets: tuple[OffsetBook, Mapping[str, int]] | None
    ) -> list[Result]:
        # Dead letters first: once Redis has audited a rejection, it must be in the DLQ.
        await self._publisher.publish(batch.dead)
        self._log_dead(batch.dead_lines)
        with tracing.span("redis apply", kind=tracing.SpanKind.CLIENT):
            applied = await self._store.apply(
                batch.accepted, batch.unapplied, batch.now, offsets, _positions(batch, offsets)
            )
        # Refused by the store (audited there): dead-lettered before anything is
        # acknowledged; a crash in between redelivers them, and they are refused again.
        refused = applied.refused
        if refused:
            dead = [(batch.sources[i], batch.accepted[i][0], why) for i, why in refused.items()]
            await self._publisher.publish(
                [dead_letter(record, why, batch.now, self._source) for record, _, why in dead]
            )
            self._log_dead(dead_line(r, why, obs.tenant, obs.event_id) for r, obs, why in dead)
        await self._notify(applied)

        outcomes = applied.outcomes
        results: list[Result] = [
            (outcomes[slot], refused.get(slot)) if isinstance(slot, int) else slot
            for slot in batch.slots
        ]
        _count(results)
        _ages(batch, outcomes)
        return results

    def _log_dead(self, lines: Iterable[dict[str, object]]) -> None:
        log = logger(self._source)
        for line in lines:
            log.warning("event dead-lettered", extra=line)

    async def publish_leftovers(self, tenants: Iterable[str]) -> None:
        """Publish the level changes cut-off publishes left in these tenants' outboxes: a
        quiet tenant has no next batch to do it.

        Raises:
            Unavailable: Redis or the broker is down; what was not published stays.
        """
        tenants = list(tenants)
        notes: dict[tuple[str, str], bytes] = {}
        for i in range(0, len(tenants), _SWEEP_READS):
            some = tenants[i : i + _SWEEP_READS]
            found = await asyncio.gather(*(self._store.leftovers(t) for t in some))
            for tenant, held in zip(some, found, strict=True):
                notes |= {(tenant, entry): note for entry, note in held}
        await self._announce(notes)

    async def _notify(self, applied: Applied) -> None:
        """Publish the batch's level changes, and any a cut-off publish left in an outbox."""
        notes = {(tenant, entry): note for tenant, entry, note in applied.notes}
        for tenant in applied.backlog:
            older = await self._store.leftovers(tenant)
            notes = {(tenant, entry): note for entry, note in older} | notes
        await self._announce(notes)
        _count_changes(note for _, _, note in applied.notes)

    async def _announce(self, notes: Mapping[tuple[str, str], bytes]) -> None:
        """Publish notes, then drop them from their outboxes."""
        if not notes:
            return
        await self._publisher.publish([level_changed(n) for n in notes.values()])
        by_tenant: dict[str, list[str]] = {}
        for tenant, entry in notes:
            by_tenant.setdefault(tenant, []).append(entry)
        for tenant, entries in by_tenant.items():
            await self._store.published(tenant, entries)


class Sweep:
    """Every ``_SWEEP_EVERY_S``, the level changes cut-off publishes left in the outboxes of
    ``tenants()`` published (``Ingestor.publish_leftovers``), within ``_SWEEP_WITHIN_S``.
    A sweep that fails (Redis or the broker down, or out of time) is one warning, never
    an error of its caller: what it did not publish waits for the next one.
    """

    def __init__(self, ingestor: Ingestor, tenants: Callable[[], Iterable[str]], log: Logger):
        self._ingestor = ingestor
        self._tenants = tenants
        self._log = log
        self._at = time.monotonic()

    async def due(self) -> None:
        """Sweep if ``_SWEEP_EVERY_S`` have passed since the last sweep (or since this was
        made)."""
        if time.monotonic() - self._at < _SWEEP_EVERY_S:
            return
        self._at = time.monotonic()  # before the await: one sweep however many callers
        try:
            async with asyncio.timeout(_SWEEP_WITHIN_S):
                # A copy: deliveries may enter tenants while the sweep waits on Redis.
                await self._ingestor.publish_leftovers(list(self._tenants()))
        except (Unavailable, TimeoutError) as exc:
            error = str(exc) or f"not done in {_SWEEP_WITHIN_S} s"
            self._log.warning("level changes left in outboxes wait", extra={"error": error})


class GroupCommit:
    """Records that come one at a time (one per HTTP delivery), applied in groups.

    While a group is being applied, the records that arrive wait; when it is done, the
    first of them leads the next group, which takes the records waiting: one Redis round
    trip, and one script call per tenant, for the group instead of one per record. No
    timer: a record that finds nothing in flight goes at once, alone, so an idle handler
    adds no wait. A group takes at most half of the callers inside (rounded up; and at
    most ``most``): while it is in Redis the handler answers and reads the other half.
    Taking them all, a steady load (a trigger's N deliveries in flight) splits into a
    group of N-1 and one of 1, and the handler idles through the big one's round trip
    (wrk -c32: 5-10 % fewer events/s than with the halves). Each caller returns its own
    record's result from its own request (the leader's request span parents the group's
    apply span, which links every record's producer).

    Failure: ``Unavailable`` (Redis or the broker down) reaches every caller of the group,
    none of which was acknowledged: each answers 503 and is retried, and what was
    applied comes back as a duplicate. Any other error is retried record by record, so
    only the callers whose record causes it see it.
    """

    def __init__(self, ingest: Callable[[Sequence[Record]], Awaitable[list[Result]]], most: int):
        self._ingest = ingest
        self._most = most
        self._waiting: list[tuple[Record, asyncio.Future[Result | None]]] = []
        self._busy = False
        self._inside = 0

    async def __call__(self, record: Record) -> Result:
        self._inside += 1
        try:
            return await self._take_part(record)
        finally:
            self._inside -= 1

    async def _take_part(self, record: Record) -> Result:
        mine: asyncio.Future[Result | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, mine))
        if self._busy:
            try:
                answer = await mine  # the result, or None: lead the next group
            except asyncio.CancelledError:
                if _leads(mine):  # given the lead, gone before taking it
                    self._hand_over()
                raise
            if answer is not None:
                return answer
        self._busy = True
        take = min(self._most, (self._inside + 1) // 2)
        group, self._waiting = self._waiting[:take], self._waiting[take:]
        try:
            results = await self._apply([r for r, _ in group])
        except BaseException as exc:  # Unavailable, or this request cancelled
            reason = exc if isinstance(exc, Unavailable) else None
            for _, theirs in group[1:]:
                if not theirs.done():
                    theirs.set_exception(_unavailable(reason))
            raise
        finally:
            self._hand_over()
        for (_, theirs), result in zip(group[1:], results[1:], strict=True):
            if theirs.done():  # its caller is gone
                continue
            if isinstance(result, Exception):
                theirs.set_exception(result)
            else:
                theirs.set_result(result)
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    async def _apply(self, records: list[Record]) -> list[Result | Exception]:
        """Each record's result, or the error it alone causes."""
        try:
            return list(await self._ingest(records))
        except Unavailable:
            raise
        except Exception:
            if len(records) == 1:
                raise
        answers: list[Result | Exception] = []
        for record in records:  # which one fails: each again, alone
            try:
                answers += await self._ingest([record])
            except Unavailable:
                raise
            except Exception as exc:
                answers.append(exc)
        return answers

    def _hand_over(self) -> None:
        """The first caller still waiting leads the next group; none: not busy."""
        while self._waiting and self._waiting[0][1].done():  # cancelled: its caller is gone
            self._waiting.pop(0)
        if self._waiting:
            self._waiting[0][1].set_result(None)
        else:
            self._busy = False


def _leads(turn: asyncio.Future[Result | None]) -> bool:
    """Whether a waiting caller was told to lead the next group (not answered, not gone)."""
    return turn.done() and not turn.cancelled() and turn.exception() is None and not turn.result()


def _unavailable(cause: Unavailable | None) -> Unavailable:
    """What each caller of a group that failed raises (its own instance, for its traceback)."""
    if cause is None:
        return Unavailable("the request applying this record's group was cancelled")
    error = Unavailable(str(cause))
    error.__cause__ = cause
    return error


def _positions(
    batch: Batch, offsets: tuple[OffsetBook, Mapping[str, int]] | None
) -> list[tuple[str, int]] | None:
    """Each accepted event's partition field and offset, for a consumer's batch."""
    if offsets is None:
        return None
    return [(partition_field(r.topic, r.partition), r.offset) for r in batch.sources]


def audit_record(
    record: Record, obs: Observation | None, now: datetime, ignored: IgnoredEvent | None = None
) -> bytes:
    """The audit entry of one event: where it came from and, once decoded, what it said
    (of an ignored one, what is known: its id, tenant and student)."""
    doc: dict[str, object] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "at": now,  # orjson writes datetimes as RFC 3339, faster than isoformat()
    }
    if obs is None:
        ce_id = record.headers.get("ce_id")
        doc["event_id"] = ce_id.decode(errors="replace") if ce_id else None
        if ignored is not None:
            known = {
                "event_id": ignored.event_id,
                "tenant": ignored.tenant,
                "student_id": ignored.student_id,
            }
            doc |= {k: v for k, v in known.items() if v is not None}
    else:
        doc |= {
            "event_id": obs.event_id,
            "tenant": obs.tenant,
            "student_id": obs.student_id,
            "occurred_at": obs.occurred_at,
        }
        if obs.voids is None:
            doc |= {"component": obs.component.value, "score": obs.score}
        else:
            doc["voids"] = obs.voids
    return orjson.dumps(doc)


def _count(results: Sequence[Result]) -> None:
    tally = {o: 0 for o in Outcome}
    for outcome, reason in results:
        tally[outcome] += 1
        if outcome is Outcome.REJECTED and reason is not None:  # an ignored one has a reason too
            DEAD_LETTERS.labels(dlq_reason(reason)).inc()
    for outcome, n in tally.items():
        if n:
            EVENTS.labels(event_outcome(outcome)).inc(n)


def _ages(batch: Batch, outcomes: Sequence[Outcome]) -> None:
    """Event age (occurred -> applied) of the events this batch applied."""
    now = batch.now
    for (obs, _), outcome in zip(batch.accepted, outcomes, strict=True):
        if outcome is Outcome.APPLIED:
            EVENT_AGE.observe(max(0.0, (now - obs.occurred_at).total_seconds()))


def _count_changes(notes: Iterable[bytes]) -> None:
    """Level changes by direction (the notes' old and new levels)."""
    rank = {level.value: i for i, level in enumerate(Level)}
    for note in notes:
        doc = orjson.loads(note)
        up = rank.get(doc.get("new_level"), 0) > rank.get(doc.get("old_level"), 0)
        LEVEL_CHANGES.labels("up" if up else "down").inc()

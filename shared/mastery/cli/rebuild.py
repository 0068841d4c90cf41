"""``mastery rebuild``: Redis lost, the state rebuilt from the Kafka topics.

The topics are the learning events' and ``mastery.xapi`` (statements forwarded by an LRS
and those posted to ``POST /xapi/statements``, each with its tenant in a header; voidings
included: a voiding read before its statement bars it, read after subtracts it).

First it takes every partition's high watermark, then reads each partition from its
beginning up to that mark (assigned, no consumer group: nothing is committed and the
live consumers are not disturbed) and feeds the records, in batches, through the ingest
path every trigger uses. Applying is idempotent by event id and does not depend on
order, so the command is safe to repeat, to interrupt, and to run beside live consumers
(the events that arrive meanwhile are theirs).

At the end it records, as the catch-all applied offsets of the ``mastery consume`` group
(``mastery.offsets``), the offsets it read up to: the group goes on after them
(a consumer finding no applied offsets in Redis but commits in Kafka refuses to start,
as Redis was emptied and a plain replay would not replay the erasures).

Three things the original run did are not done again:
- Erasures are replayed first. Redis held the tombstones; the access audit
  (``mastery.audit``) holds each allowed ``gdpr-erase`` with its time, and erasing
  again at that time makes the student's older events refused as ``erased``.
- Records the engine refuses now (malformed, or older than the retention window) are
  counted and skipped: they went to the DLQ when they first arrived.
- Level changes the rebuilt events cause are not announced again; the notification
  service heard of them then. Others (live consumers' pending ones) still are.
Only for records a consumer of the group handled, though: those below the offsets it
committed in Kafka. Records at or past them (the backlog that arrived while it stood
still, Redis lost) are new to everyone: refused ones are dead-lettered, their level
changes announced. A partition the group never committed counts as handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import uvloop
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from mastery.errors import IgnoredEvent, InvalidEvent, OffsetsMoved
from mastery.events.codec import decode
from mastery.events.ingest import Ingestor
from mastery.events.kafka import consumer_config, reader_config, to_record
from mastery.offsets import CATCH_ALL, OffsetBook, partition_field
from mastery.topics import (
    AUDIT_TOPIC,
    DLQ_SUFFIX,
    EVENT_TOPICS,
    LEVEL_CHANGED_TOPIC,
    XAPI_TOPIC,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from mastery.bootstrap import Resources
    from mastery.ports import OutMessage, Publisher, Record
    from mastery.settings import Settings

__all__ = ["SOURCES", "Erasure", "Tally", "erasures", "rebuild", "run"]

#: What is rebuilt from: the learning events and the xAPI statements, those posted over
#: HTTP included (their DLQs hold only refused ones).
SOURCES = (*EVENT_TOPICS, XAPI_TOPIC)

_ERASE_FUNCTION = "gdpr-erase"


@dataclass(frozen=True, slots=True)
class Erasure:
    tenant: str
    student: str
    at: datetime


@dataclass(slots=True)
class Tally:
    """What a rebuild did, for its report."""

    read: int = 0
    erasures: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """applied / duplicate / erased, as the ingest path answered."""
    refused: Counter[str] = field(default_factory=Counter)
    """Records not applied, by the reason the engine refuses them now."""

    def lines(self) -> list[str]:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(self.outcomes.items())) or "none"
        lines = [
            f"erasures replayed: {self.erasures}",
            f"records read: {self.read}; fed: {outcomes}; skipped: {self.refused.total()}",
        ]
        lines += [f"  skipped {n}: {reason}" for reason, n in self.refused.most_common(10)]
        return lines


class _Unannounced:
    """The publisher the rebuild's ingest path uses: level changes caused by the records
    being rebuilt are dropped, and so are the dead letters of records the store refuses
    again (a full day record: dead-lettered when they first came), but for the records
    no consumer handled (``fresh``); everything else goes to the real publisher."""

    def __init__(self, inner: Publisher) -> None:
        self._inner = inner
        self.replayed: set[str] = set()  # event ids of the batch's handled records
        self.fresh: set[tuple[bytes, bytes, bytes]] = set()  # its others: topic, partition, offset

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        await self._inner.publish([m for m in messages if not self._replayed(m)])

    def _replayed(self, message: OutMessage) -> bool:
        if message.topic.endswith(DLQ_SUFFIX):  # only fed records reach the ingest path's
            at = dict(message.headers)
            return (at.get("dlq_topic"), at.get("dlq_partition"), at.get("dlq_offset")) not in (
                self.fresh
            )
        if message.topic != LEVEL_CHANGED_TOPIC or message.value is None:
            return False
        return orjson.loads(message.value).get("cause_event_id") in self.replayed


async def rebuild(
    res: Resources,
    topics: Sequence[str] = SOURCES,
    *,
    group: str = "mastery-consume",
    batch_size: int = 500,
    timeout_s: float = 30,
    report: Callable[[str], None] = lambda _: None,
) -> Tally:
    """Replay the erasures, then feed ``topics`` up to their current ends to the store,
    and record those ends as ``group``'s catch-all applied offsets.

    Raises:
        ValueError: a topic does not exist.
        TimeoutError: a partition stopped delivering before its high watermark.
        Unavailable: Redis or the broker went away; run it again.
    """
    tally = Tally()
    # An erasure older than the window refuses nothing the window has not refused already.
    oldest = datetime.now(UTC) - res.model.window
    for erasure in await erasures(res.settings, timeout_s):
        if erasure.at >= oldest:
            await res.store.erase(erasure.tenant, erasure.student, erasure.at)
            tally.erasures += 1
    publisher = _Unannounced(res.publisher)
    xapi_tenants = res.settings.xapi_tenants
    ingestor = Ingestor(
        res.store, publisher, model=res.model, source="mastery-rebuild", xapi_tenants=xapi_tenants
    )
    ends: dict[str, int] = {}
    handled = await asyncio.to_thread(_committed, res.settings, group, topics, timeout_s)
    async for topic, records in _read(res.settings, topics, batch_size, timeout_s, report):
        for r in records:
            field = partition_field(r.topic, r.partition)
            ends[field] = max(ends.get(field, 0), r.offset + 1)
        now = datetime.now(UTC)
        fed: list[Record] = []
        publisher.replayed, publisher.fresh = set(), set()
        for record in records:
            at = handled.get(partition_field(record.topic, record.partition))
            if at is not None and record.offset >= at:  # no consumer handled it yet
                publisher.fresh.add(_position(record))
                fed.append(record)  # refused ones are dead-lettered by the ingest path
                continue
            try:
                obs = decode(record, now, res.model, xapi_tenants=xapi_tenants)
                publisher.replayed.add(obs.event_id)
            except IgnoredEvent:
                pass  # fed all the same: the ingest path counts it as ignored
            except InvalidEvent as exc:
                tally.refused[f"{topic}: {exc.reason}"] += 1
                continue
            fed.append(record)
        tally.read += len(records)
        for outcome, reason in await ingestor.ingest(fed) if fed else ():
            if reason is None:
                tally.outcomes[outcome.value] += 1
            else:  # refused by the store (a full day record), as when it first came
                tally.refused[f"{topic}: {reason}"] += 1
    book = OffsetBook(group, await res.store.read_offsets(group))
    with contextlib.suppress(OffsetsMoved):  # a live consumer of the group wrote them
        await res.store.advance_offsets(book, {CATCH_ALL: ends})
    return tally


def _position(record: Record) -> tuple[bytes, bytes, bytes]:
    """Where a record came from, as its dead letter's headers say it."""
    return record.topic.encode(), str(record.partition).encode(), str(record.offset).encode()


def _committed(
    settings: Settings, group: str, topics: Sequence[str], timeout_s: float
) -> dict[str, int]:
    """The offsets ``group`` committed in Kafka, per partition field (only those it has):
    what its consumers handled. Read without joining the group."""
    consumer = Consumer(consumer_config(settings, group))
    try:
        metadata = consumer.list_topics(timeout=timeout_s).topics
        partitions = [
            TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions
        ]
        found = consumer.committed(partitions, timeout=timeout_s) if partitions else []
        return {
            partition_field(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0
        }
    finally:
        consumer.close()


async def erasures(settings: Settings, timeout_s: float = 30) -> list[Erasure]:
    """Every erasure the access audit recorded as allowed, oldest first."""
    found: list[Erasure] = []
    async for _, records in _read(settings, [AUDIT_TOPIC], 1000, timeout_s, lambda _: None):
        for record in records:
            try:
                doc = orjson.loads(record.value or b"")
                if doc["function"] != _ERASE_FUNCTION or doc["outcome"] != "allowed":
                    continue
                at = datetime.fromisoformat(doc["at"])
                found += [Erasure(doc["tenant"], s, at) for s in doc["students"]]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not an access record: nothing to replay
    return sorted(found, key=lambda e: e.at)


async def _read(
    settings: Settings,
    topics: Sequence[str],
    batch_size: int,
    timeout_s: float,
    report: Callable[[str], None],
) -> AsyncIterator[tuple[str, list[Record]]]:
    """Batches of each partition's records, from its beginning to the mark taken first."""
    consumer = Consumer(reader_config(settings))
    try:
        marks = await asyncio.to_thread(_marks, consumer, topics, timeout_s)
        for tp, high in marks:
            report(f"{tp.topic}[{tp.partition}]: from the beginning")
            consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
            async for records in _partition(consumer, tp, high, batch_size, timeout_s):
                yield tp.topic, records
    finally:
        await asyncio.to_thread(consumer.close)


async def _partition(
    consumer: Consumer, tp: TopicPartition, high: int, batch_size: int, timeout_s: float
) -> AsyncIterator[list[Record]]:
    """The assigned partition's records below ``high``, or up to its end (EOF)."""
    deadline = time.monotonic() + timeout_s
    fetched = False
    while True:
        # consume() waits for a full batch or its timeout: short waits, a stall deadline.
        messages = await asyncio.to_thread(consumer.consume, batch_size, 0.1)
        if not messages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tp.topic}[{tp.partition}] stalled before offset {high}")
            continue
        deadline = time.monotonic() + timeout_s
        if not fetched:
            # Some brokers (Tansu) answer the first ListOffsets with a stale end; the end
            # the first fetch reports is then further, and is the one to read up to.
            fetched = True
            high = max(high, consumer.get_watermark_offsets(tp, cached=True)[1])
        records: list[Record] = []
        done = False
        for message in messages:
            error, offset = message.error(), message.offset() or 0
            if error is not None:
                done = error.code() == KafkaError._PARTITION_EOF
            elif offset >= high:
                done = True  # written after the rebuild started: the live consumers' part
            else:
                records.append(to_record(message))
                done = offset >= high - 1
            if done:
                break
        if records:
            yield records
        if done:
            return


def _marks(
    consumer: Consumer, topics: Sequence[str], timeout_s: float
) -> list[tuple[TopicPartition, int]]:
    """(partition, high watermark) of every non-empty partition of ``topics``."""
    metadata = consumer.list_topics(timeout=timeout_s).topics
    marks = []
    for topic in topics:
        meta = metadata.get(topic)
        if meta is None or meta.error is not None:
            raise ValueError(f"no topic {topic}")
        for partition in sorted(meta.partitions):
            tp = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                marks.append((tp, high))
    return marks


def run(batch_size: int, group: str, echo: Callable[[str], None]) -> None:
    """The command: build the clients from the environment, rebuild, report."""
    from mastery.bootstrap import build
    from mastery.settings import load

    async def main() -> Tally:
        res = build(load(), source="mastery-rebuild")
        try:
            return await rebuild(res, group=group, batch_size=batch_size, report=echo)
        finally:
            await res.aclose()

    for line in uvloop.run(main()).lines():
        echo(line)

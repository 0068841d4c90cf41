"""Reading a tenant's recent access records back from the audit topic.

The topic is keyed by tenant, but Kafka cannot fetch one key, so a read walks every
partition backwards from its end in pages that grow (256, x4, ...), keeping the records
whose key is the tenant, until each partition either has ``limit`` of them, holds
nothing newer than what was found elsewhere, reaches ``since`` or its start, or a
budget of records (``scan_max``) is spent. Partitions are assigned, not subscribed: no
consumer group is joined (~3 s on Tansu) and nothing is committed.

Two Tansu quirks shape it: the high watermark it reports is the base offset of the
last record batch + 1 (later records of that batch exist), so the newest page is read
to the partition's end (EOF), not to the watermark; and ``offsets_for_times`` answers
0 for a time after the last record, so ``since`` is checked against timestamps while
scanning instead of by seeking.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from mastery.errors import Unavailable
from mastery.paging import FIRST_PAGE, GrowingPages

if TYPE_CHECKING:
    from collections.abc import Iterable

    from confluent_kafka import Message

__all__ = ["AccessEntry", "AccessLog", "AccessScan", "KafkaAccessLog"]

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One access record as written (``mastery.web.access``), where and when it was."""

    timestamp_ms: int
    partition: int
    offset: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AccessScan:
    entries: list[AccessEntry]
    """Newest first, at most ``limit``."""
    complete: bool
    """False when the budget ran out before older records could be ruled out."""


class AccessLog(Protocol):
    """A tenant's most recent access records."""

    async def recent(
        self,
        tenant: str,
        limit: int,
        *,
        since_ms: int | None = None,
        student_id: str | None = None,
    ) -> AccessScan: ...


@dataclass(frozen=True, slots=True)
class _Query:
    tenant: str
    limit: int
    since_ms: int | None
    student_id: str | None

    def match(self, message: Message) -> AccessEntry | None:
        if message.key() != self.tenant.encode():
            return None
        _, ts = message.timestamp()
        if self.since_ms is not None and ts < self.since_ms:
            return None
        try:
            record = orjson.loads(message.value() or b"")
        except orjson.JSONDecodeError:
            return None
        # The key decides the tenant; a record that says otherwise is not shown either.
        if not isinstance(record, dict) or record.get("tenant") != self.tenant:
            return None
        students = record.get("students")
        if self.student_id is not None and not (
            isinstance(students, list) and self.student_id in students
        ):
            return None
        return AccessEntry(ts, message.partition() or 0, message.offset() or 0, record)


@dataclass(slots=True)
class _Partition:
    """Where the backward walk over one partition stands."""

    low: int
    start: int
    """First offset of the page being read; the high watermark before the first page."""
    end: int | None = None
    """Offset after that page; ``None`` for the newest page (read to EOF)."""
    started: bool = False
    oldest_ms: int | None = None
    entries: list[AccessEntry] = field(default_factory=list)

    def saw(self, timestamp_ms: int) -> None:
        if self.oldest_ms is None or timestamp_ms < self.oldest_ms:
            self.oldest_ms = timestamp_ms

    def wants_more(self, q: _Query, cutoff_ms: int | None) -> bool:
        """Whether older records of this partition could still make the answer."""
        if self.start <= self.low or len(self.entries) >= q.limit:
            return False
        if self.oldest_ms is None:
            return True
        if q.since_ms is not None and self.oldest_ms < q.since_ms:
            return False
        return cutoff_ms is None or self.oldest_ms > cutoff_ms

    def older(self, page: int) -> None:
        """Move to the ``page`` records before the current page (the newest, the first time)."""
        if not self.started:
            self.started = True
        else:
            self.end = self.start
        self.start = max(self.low, self.start - page)


class KafkaAccessLog:
    """``AccessLog`` over confluent-kafka, reading one topic.

    The consumer is made on first use (functions that never read the audit open no
    connection) and reused; reads take turns on it, each in a worker thread, so the
    blocking client calls never stall the event loop.
    """

    def __init__(
        self, config: dict[str, Any], topic: str, *, scan_max: int = 50_000, timeout_s: float = 10
    ) -> None:
        self._config = config
        self._topic = topic
        self._scan_max = scan_max
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self._turn = asyncio.Lock()

    async def recent(
        self,
        tenant: str,
        limit: int,
        *,
        since_ms: int | None = None,
        student_id: str | None = None,
    ) -> AccessScan:
        query = _Query(tenant, limit, since_ms, student_id)
        async with self._turn:
            return await asyncio.to_thread(self._scan, query)

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def _scan(self, q: _Query) -> AccessScan:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        consumer = self._consumer
        deadline = time.monotonic() + self._timeout_s
        try:
            bounds = self._bounds(consumer, deadline)
            parts = {p: _Partition(low, high) for p, (low, high) in bounds.items() if high > low}
            complete = self._walk(consumer, parts, q, deadline)
        except KafkaException as exc:
            raise Unavailable(f"kafka: {exc}") from exc
        finally:
            consumer.unassign()
        entries = sorted(
            (e for part in parts.values() for e in part.entries),
            key=lambda e: (e.timestamp_ms, e.offset),
            reverse=True,
        )
        return AccessScan(entries[: q.limit], complete)

    def _walk(
        self, consumer: Consumer, parts: dict[int, _Partition], q: _Query, deadline: float
    ) -> bool:
        """Read pages, newest first, until no partition wants more; False if the budget ran out."""
        active, pages = dict(parts), GrowingPages(max(FIRST_PAGE, q.limit), self._scan_max)
        while active:
            page = pages.next(len(active))
            if not page:
                return False
            for part in active.values():
                part.older(page)
            pages.spent(self._read(consumer, active, q, deadline))
            cutoff = _cutoff(parts.values(), q.limit)
            active = {p: part for p, part in active.items() if part.wants_more(q, cutoff)}
        return True

    def _bounds(self, consumer: Consumer, deadline: float) -> dict[int, tuple[int, int]]:
        """Low and high watermark per partition; none when the topic does not exist yet."""
        meta = consumer.list_topics(self._topic, timeout=_left(deadline))
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None:
            if topic is None or topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return {}
            raise Unavailable(f"kafka: {self._topic}: {topic.error}")
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=_left(deadline)
            )
            for p in topic.partitions
        }

    def _read(
        self, consumer: Consumer, parts: dict[int, _Partition], q: _Query, deadline: float
    ) -> int:
        """Read each partition's current page; the number of records read."""
        consumer.assign([TopicPartition(self._topic, p, part.start) for p, part in parts.items()])
        pending, read = set(parts), 0
        while pending:
            if time.monotonic() > deadline:
                raise Unavailable(f"kafka: reading {self._topic} took too long")
            for message in consumer.consume(_BATCH, 0.05):
                p = message.partition()
                part = parts.get(p) if p in pending else None
                if part is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise Unavailable(f"kafka: {error}")
                    pending.discard(p)
                    continue
                offset = message.offset() or 0
                if offset < part.start:
                    continue  # a record batch starts before the page; the client skips these
                if part.end is not None and offset >= part.end:
                    pending.discard(p)
                    continue
                read += 1
                part.saw(message.timestamp()[1])
                entry = q.match(message)
                if entry is not None:
                    part.entries.append(entry)
                if part.end is not None and offset >= part.end - 1:
                    pending.discard(p)
        return read


def _cutoff(parts: Iterable[_Partition], limit: int) -> int | None:
    """The timestamp of the ``limit``-th newest record found so far, if there are that many."""
    times = sorted((e.timestamp_ms for part in parts for e in part.entries), reverse=True)
    return times[limit - 1] if len(times) >= limit else None


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())

"""Where a consumer stands: its book of applied offsets, where it placed each partition,
how far it has applied; placing partitions from Redis on assignment and after offsets
moved (``mastery.offsets``, docs/decisions.md "Applied offsets")."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from mastery.errors import Misconfigured
from mastery.events.retries import consumer_log, retrying
from mastery.metrics import CONSUMER_BACKLOG, CONSUMER_LAG_MESSAGES
from mastery.offsets import OffsetBook, partition_field

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from confluent_kafka.aio import AIOConsumer

    from mastery.ports import OffsetStore

__all__ = ["Ends", "Position"]

#: How often the offsets of tenants absent from recent batches are moved up to the
#: consumer's position, so that resuming never starts far behind because of them.
_ADVANCE_EVERY_S = 5.0
#: How often the backlog is measured.
MEASURE_EVERY_S = 5.0

Ends = dict[str, int]
"""Per partition field, the next offset after a batch."""


class Position:
    """Where this consumer stands: the offsets book and the end of the last applied batch."""

    def __init__(self, store: OffsetStore, group: str, stop: asyncio.Event) -> None:
        self.store = store
        self.stop = stop
        self.book = OffsetBook(group)
        self.applied: Ends = {}
        #: Where each assigned partition was started (None: at its beginning).
        self.starts: dict[str, int | None] = {}
        self.advanced_at = time.monotonic()
        self.measured_at = time.monotonic()
        #: Bumped as the partitions are placed anew (an assignment, a seek back). A batch
        #: fetched before belongs to the old positions and is dropped (``consume``).
        self.generation = 0

    async def place(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        """Start each assigned partition where Redis says its events are all applied.

        Raises:
            Misconfigured: Redis holds no applied offsets of the group although Kafka
                holds its commits: Redis was emptied or replaced. Replaying the topics
                from their start would not replay the erasures (``mastery rebuild`` does).
        """
        self.generation += 1
        await self._read()
        self.applied = {}
        if not self.book.tenants() and any(
            tp.offset >= 0 for tp in await consumer.committed(partitions)
        ):
            raise self._emptied("kafka holds its commits")
        starts = self.book.resume_at(partition_field(tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            at = starts[partition_field(tp.topic, tp.partition)]
            tp.offset = OFFSET_BEGINNING if at is None else at
        await consumer.assign(partitions)
        self.starts = dict(starts)
        consumer_log().info("resuming", extra={"at": {f: starts[f] for f in sorted(starts)}})

    async def seek_back(self, consumer: AIOConsumer) -> None:
        """After ``OffsetsMoved``: re-read the offsets, move every partition back to them.

        Raises:
            Misconfigured: Redis held the group's offsets and holds none now: it was
                emptied under the running consumer (as ``place`` says at a start).
        """
        held = bool(self.book.tenants())
        self.generation += 1
        await self._read()
        if held and not self.book.tenants():
            raise self._emptied("it held them a moment ago")
        assigned = await consumer.assignment()
        starts = self.book.resume_at(partition_field(tp.topic, tp.partition) for tp in assigned)
        for tp in assigned:
            at = starts[partition_field(tp.topic, tp.partition)]
            start = OFFSET_BEGINNING if at is None else at
            await consumer.seek(TopicPartition(tp.topic, tp.partition, start))
        self.applied = {}
        self.starts = dict(starts)
        consumer_log().warning("offsets moved in redis: resuming from them", extra={"at": starts})

    def _emptied(self, evidence: str) -> Misconfigured:
        """Redis lost the group's applied offsets: replaying the topics from their start
        would not replay the erasures (``mastery rebuild`` does)."""
        return Misconfigured(
            f"redis holds no applied offsets of group {self.book.group}, but {evidence}: "
            "redis was emptied or replaced. Run `mastery rebuild` (it restores the erasures "
            "first), then start again"
        )

    async def advance_idle(self, batch_tenants: set[str]) -> None:
        """Move up the offsets of tenants that no recent batch wrote (every few seconds)."""
        if time.monotonic() - self.advanced_at < _ADVANCE_EVERY_S:
            return
        moves = {}
        for tenant in self.book.tenants() - batch_tenants:
            ends = {
                f: self.applied[f]
                for f, at in self.book.ends_of(tenant).items()
                if f in self.applied and at < self.applied[f]
            }
            if ends:
                moves[tenant] = ends
        await self.store.advance_offsets(self.book, moves)
        self.advanced_at = time.monotonic()

    async def measure(self, consumer: AIOConsumer, topics: Sequence[str]) -> None:
        """Every few seconds: records left past the applied ones, per assigned partition.

        Called between fetches, whether batches apply or not: a consumer stuck retrying
        still shows its backlog. The watermarks are those the last fetches brought
        (``cached``): no broker call.
        """
        if time.monotonic() - self.measured_at < MEASURE_EVERY_S:
            return
        self.measured_at = time.monotonic()
        behind = dict.fromkeys(topics, 0)
        for tp in await consumer.assignment():
            try:
                low, high = await consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high < 0:  # no fetch has brought it yet
                continue
            field = partition_field(tp.topic, tp.partition)
            at = self.applied.get(field, self.starts.get(field))
            left = max(0, high - (max(low, 0) if at is None else at))
            CONSUMER_LAG_MESSAGES.labels(tp.topic).observe(left)
            behind[tp.topic] = behind.get(tp.topic, 0) + left
        for topic, left in behind.items():
            CONSUMER_BACKLOG.labels(topic).set(left)

    async def _read(self) -> None:
        waiting = retrying("redis unavailable, retrying to read applied offsets", self.stop)
        async for attempt in waiting:
            with attempt:
                self.book.replace(await self.store.read_offsets(self.book.group))

"""``mastery batch-worker``: runs batches from the three priority topics, highest first.

One consumer is subscribed to ``<prefix>.high``, ``.normal`` and ``.low`` and keeps
what it fetched in one queue per priority (a topic's partitions are paused while its
queue is full). It always runs the head of the highest non-empty queue, and before it
starts a normal or low batch it asks the broker whether a higher topic still holds
records it has not fetched (position < high watermark): if so it fetches those first.
Between chunks a running batch yields to a newly fetched higher one; its progress is
in Redis, so it resumes where it stopped. A batch's offset is committed only once its
record is final, so a crash redelivers it and the rerun skips the students done.

Knative KafkaSources (one per topic) cannot order deliveries across topics: this
worker is the one that keeps "high before normal before low" (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from mastery import tracing
from mastery.batch.messages import decode_batch
from mastery.batch.runner import BatchRunner, RunOutcome
from mastery.domain.batch import Priority
from mastery.errors import InvalidEvent, Unavailable
from mastery.events.consumer import commit_offsets
from mastery.events.kafka import consumer_config, dead_letter, dead_line, to_record
from mastery.logs import logger
from mastery.metrics import DEAD_LETTERS, dlq_reason
from mastery.topics import batch_topic, priority_of

if TYPE_CHECKING:
    from pathlib import Path

    from confluent_kafka import Message

    from mastery.ports import Clock, Publisher
    from mastery.settings import Settings

__all__ = ["PriorityWorker", "WorkerResources"]

_ORDER = tuple(Priority)  # high, normal, low
_MAX_BUFFERED = 64  # per priority; its partitions are paused beyond this
_PATIENCE = 40  # polls a lower batch waits for unread higher records that never come


class WorkerResources(Protocol):
    """What the worker uses: its settings, the runner, the clock and a publisher (DLQ)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def runner(self) -> BatchRunner: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def publisher(self) -> Publisher: ...


class PriorityWorker:
    def __init__(
        self,
        res: WorkerResources,
        runner: BatchRunner | None = None,
        group: str | None = None,
        ready_file: Path | None = None,
    ) -> None:
        self._res = res
        self._runner = runner or res.runner
        self._group = group or res.settings.batch_group
        self._ready_file = ready_file
        prefix = res.settings.batch_topic_prefix
        self._topics = {p: batch_topic(prefix, p) for p in _ORDER}
        self._queues: dict[Priority, deque[Message]] = {p: deque() for p in _ORDER}
        self._assigned: dict[Priority, set[int]] = {p: set() for p in _ORDER}
        self._paused: set[Priority] = set()
        self._log = logger("batch-worker")
        self._consumer: AIOConsumer | None = None

    @property
    def consumer(self) -> AIOConsumer:
        assert self._consumer is not None, "run() makes the consumer"
        return self._consumer

    async def run(self, stop: asyncio.Event) -> None:
        """Serve batches until ``stop`` is set; a running batch yields at its next chunk."""
        config = consumer_config(self._res.settings, self._group)
        self._consumer = AIOConsumer(config, max_workers=2)
        await self.consumer.subscribe(
            list(self._topics.values()), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._log.info("serving batches", extra={"topics": list(self._topics.values())})
        waited = 0
        try:
            while not stop.is_set():
                await self._fill(0.1 if not any(self._queues.values()) else 0)
                priority = next((p for p in _ORDER if self._queues[p]), None)
                if priority is None:
                    continue
                if waited < _PATIENCE and await self._higher_unread(priority):
                    waited += 1
                    await self._fill(0.05)
                    continue
                waited = 0
                message = self._queues[priority][0]
                if await self._handle(message, priority, stop):
                    queue = self._queues[priority]
                    if queue and queue[0] is message:  # else a rebalance took its partition
                        queue.popleft()
                    offset = TopicPartition(
                        message.topic() or "", message.partition() or 0, (message.offset() or 0) + 1
                    )
                    await commit_offsets(self.consumer, [offset], wait=True)
        finally:
            await self.consumer.close()

    async def _handle(self, message: Message, priority: Priority, stop: asyncio.Event) -> bool:
        """Run one batch message; True once it may be committed (final, missing or bad)."""
        record = to_record(message)
        try:
            tenant, batch_id = decode_batch(record)
        except InvalidEvent as exc:
            self._log.warning("dead-lettering a batch message", extra=dead_line(record, exc.reason))
            dead = dead_letter(record, exc.reason, self._res.clock(), "batch-worker")
            await self._res.publisher.publish([dead])
            DEAD_LETTERS.labels(dlq_reason(exc.reason)).inc()
            return True

        async def outranked() -> bool:
            await self._fill(0)
            return stop.is_set() or any(self._queues[p] for p in _ORDER[: _ORDER.index(priority)])

        outcome = RunOutcome.YIELDED
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            wait=wait_exponential(multiplier=0.1, max=5),
            before_sleep=lambda rs: self._log.warning(
                "dependency unavailable, retrying batch",
                extra={"error": str(rs.outcome.exception()) if rs.outcome else ""},
            ),
        ):
            with (
                attempt,
                tracing.span(
                    "mastery.batch_message",
                    kind=tracing.SpanKind.CONSUMER,
                    parent=tracing.context_of(record.headers),
                ),
            ):
                outcome = await self._runner.run(tenant, batch_id, outranked)
        self._log.info(
            "batch run",
            extra={"batch_id": batch_id, "priority": priority.value, "outcome": outcome.value},
        )
        return outcome is not RunOutcome.YIELDED

    async def _fill(self, wait_s: float) -> None:
        """Move fetched messages to their priority's queue; pause topics whose queue is full."""
        for m in await self.consumer.consume(100, wait_s):
            if m.error() is None:
                self._queues[priority_of(m.topic() or "")].append(m)
        for p in _ORDER:
            full = len(self._queues[p]) >= _MAX_BUFFERED
            if full != (p in self._paused) and self._assigned[p]:
                parts = [TopicPartition(self._topics[p], i) for i in self._assigned[p]]
                await (self.consumer.pause if full else self.consumer.resume)(parts)
                self._paused.symmetric_difference_update({p})

    async def _higher_unread(self, priority: Priority) -> bool:
        """Whether a higher topic holds records not fetched yet (the broker's view)."""
        for p in _ORDER[: _ORDER.index(priority)]:
            if self._queues[p] or await self._unread(p):
                return True
        return False

    async def _unread(self, priority: Priority) -> bool:
        topic = self._topics[priority]
        parts = [TopicPartition(topic, i) for i in sorted(self._assigned[priority])]
        if not parts:
            return False
        try:
            positions = await self.consumer.position(parts)
            unknown = [tp for tp in positions if tp.offset < 0]
            committed = await self.consumer.committed(unknown, timeout=5) if unknown else []
            start = {tp.partition: tp.offset for tp in [*positions, *committed] if tp.offset >= 0}
            for tp in parts:
                low, high = await self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                if start.get(tp.partition, low) < high:
                    return True
        except KafkaException as exc:
            self._log.warning("cannot read watermarks", extra={"error": str(exc)})
        return False

    async def _on_assign(self, _: object, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned[priority_of(tp.topic)].add(tp.partition)
        self._paused.clear()  # a new assignment starts unpaused
        if self._ready_file is not None and partitions:
            await asyncio.to_thread(self._ready_file.touch)

    async def _on_revoke(self, _: object, partitions: list[TopicPartition]) -> None:
        """Forget revoked partitions and their fetched messages: their new owner reads them."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            self._assigned[priority_of(tp.topic)].discard(tp.partition)
        for p, queue in self._queues.items():
            kept = [m for m in queue if (m.topic(), m.partition()) not in gone]
            self._queues[p] = deque(kept)

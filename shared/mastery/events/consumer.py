"""``mastery consume``: the Kafka-native trigger, applying messages in batches.

Each batch: one ``Ingestor.ingest`` (one Redis round trip), then an offset commit. Two
batches overlap (one is decoded while the other runs in Redis) and commit in order.
Commits are asynchronous while running (a slow coordinator must not stall the stream)
and synchronous once at the end. Offsets are never committed before Redis has applied
the batch, so a crash redelivers and the redelivered events count as duplicates:
nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from mastery.errors import Unavailable
from mastery.events.kafka import consumer_config, to_record
from mastery.logs import logger

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from confluent_kafka import Message

    from mastery.bootstrap import Resources

__all__ = ["commit_offsets", "consume", "next_batch", "next_offsets", "subscribe"]

#: Batches in flight: one decoded in Python while the other runs in Redis.
_IN_FLIGHT = 2


async def subscribe(consumer: AIOConsumer, topics: Sequence[str], ready_file: Path | None) -> None:
    """Subscribe; ``ready_file`` appears once the group has assigned partitions (readiness)."""

    async def on_assign(_: object, partitions: list[TopicPartition]) -> None:
        if ready_file is not None and partitions:
            await asyncio.to_thread(ready_file.touch)

    await consumer.subscribe(list(topics), on_assign=on_assign)


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: one past the last, per partition."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        last[key] = max(last.get(key, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


async def next_batch(consumer: AIOConsumer, size: int, idle_s: float = 0.1) -> list[Message]:
    """The first message to arrive, plus whatever is already buffered behind it (<= size).

    ``consume(n, timeout)`` alone waits out its whole timeout unless ``n`` messages come,
    so a trickle of events would wait for every batch; this never waits once one is here.
    """
    first = await consumer.poll(idle_s)
    if first is None:
        return []
    rest = await consumer.consume(size - 1, 0) if size > 1 else []
    return [first, *rest]


async def consume(
    res: Resources,
    topics: Sequence[str],
    stop: asyncio.Event,
    group: str | None = None,
    ready_file: Path | None = None,
) -> None:
    """Consume ``topics`` until ``stop`` is set; the current batch is finished first."""
    settings = res.settings
    log = logger("mastery-consume")
    consumer = AIOConsumer(
        consumer_config(settings, group or settings.consumer_group), max_workers=2
    )
    await subscribe(consumer, topics, ready_file)
    log.info("consuming", extra={"topics": list(topics), "group": group or settings.consumer_group})
    inflight: deque[asyncio.Task[None]] = deque()
    applied: dict[tuple[str, int], TopicPartition] = {}  # next offset per partition
    try:
        fetch = asyncio.ensure_future(next_batch(consumer, settings.batch_size))
        while not stop.is_set():
            messages = await fetch
            # Fetch the next batch while this one is applied.
            fetch = asyncio.ensure_future(next_batch(consumer, settings.batch_size))
            batch = [m for m in messages if _usable(m)]
            if not batch:
                continue
            previous = inflight[-1] if inflight else None
            task = _apply_thencommit_offsets(res, consumer, batch, previous, applied)
            inflight.append(asyncio.create_task(task))
            if len(inflight) == _IN_FLIGHT:
                await inflight.popleft()
        fetch.cancel()
        while inflight:
            await inflight.popleft()
        if applied:
            await commit_offsets(consumer, list(applied.values()), wait=True)
    finally:
        await consumer.close()


async def _apply_thencommit_offsets(
    res: Resources,
    consumer: AIOConsumer,
    batch: Sequence[Message],
    previous: asyncio.Task[None] | None,
    applied: dict[tuple[str, int], TopicPartition],
) -> None:
    """Apply a batch (retrying while Redis or the broker is down), then commit its offsets.

    The offsets wait for the previous batch's commit, so they only ever move forward over
    applied events.
    """
    log = logger("mastery-consume")
    records = [to_record(m) for m in batch]
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Unavailable),
        wait=wait_exponential(multiplier=0.1, max=5),
        before_sleep=lambda rs: log.warning(
            "dependency unavailable, retrying batch",
            extra={"error": str(rs.outcome.exception()) if rs.outcome else ""},
        ),
    ):
        with attempt:
            await res.ingestor.ingest(records)
    if previous is not None:
        await previous
    offsets = next_offsets(batch)
    applied.update({(tp.topic, tp.partition): tp for tp in offsets})
    await commit_offsets(consumer, offsets, wait=False)


async def commit_offsets(
    consumer: AIOConsumer, offsets: list[TopicPartition], *, wait: bool
) -> None:
    """Commit ``offsets``; a failed commit is logged (the events come back, as duplicates)."""
    try:
        await consumer.commit(offsets=offsets, asynchronous=not wait)
    except KafkaException as exc:
        # Partitions moved in a rebalance: their new owner re-reads them and the events
        # come back as duplicates, which the store recognises.
        logger("mastery-consume").warning("offset commit failed", extra={"error": str(exc)})


def _usable(message: Message) -> bool:
    err = message.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        logger("mastery-consume").warning("consumer error", extra={"error": str(err)})
    return False

"""``mastery consume``: the Kafka-native trigger, applying messages in batches.

Each batch: one ``Ingestor.apply`` (one Redis round trip per node), which also records,
per tenant, the offsets up to which its events are applied (``mastery.offsets``).
Those offsets in Redis, not the group's commits in Kafka, say where to resume: on
assignment each partition starts at the lowest offset any tenant records for it (its
start when Redis holds none), so a Redis that lost writes in a failover gets exactly
the lost events again, and a Redis rebuilt from nothing gets every event again.
Redelivered events count as duplicates: nothing lost, nothing twice.

Batches apply in order, one at a time; the next one is decoded meanwhile. When a
tenant's offsets are not what this consumer last wrote (writes lost, or another
consumer moved them), the batch stops there, the consumer re-reads every offset and
seeks its partitions back. Offsets are still committed to Kafka after each batch, for
lag monitoring (KEDA) only.

While Redis or the broker is down every step is retried with backoff, until ``stop``:
then the retries give up and ``consume`` returns. Nothing is lost: what was not applied
was not committed either, and the next consumer reads it again from the offsets in Redis.

Measured (``mastery.metrics``): per batch and partition, the time its oldest record
waited in Kafka before it was applied (``mastery_consumer_lag_seconds``), and the time
of the last applied batch; every few seconds, whether batches apply or not, how many
records each assigned partition still holds past what was applied
(``mastery_consumer_lag_messages``, ``mastery_consumer_backlog_messages``, from the high
watermarks the fetches brought back); and each retry, by the dependency it waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from mastery.errors import Misconfigured, OffsetsMoved, Unavailable
from mastery.events.ingest import Sweep
from mastery.events.kafka import consumer_config, to_record
from mastery.events.position import MEASURE_EVERY_S, Ends, Position
from mastery.events.retries import consumer_log, retrying
from mastery.metrics import CONSUMER_LAG, CONSUMER_LAST_APPLIED
from mastery.offsets import CATCH_ALL, partition_field

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from confluent_kafka import Message

    from mastery.events.ingest import Batch, Ingestor
    from mastery.ports import OffsetStore
    from mastery.settings import Settings

__all__ = [
    "ConsumerResources",
    "commit_offsets",
    "consume",
    "next_batch",
    "next_offsets",
    "subscribe",
]

#: Batches in flight: one decoded in Python while the other runs in Redis.
_IN_FLIGHT = 2


class ConsumerResources(Protocol):
    """What ``consume`` uses: its settings, the ingestor and where applied offsets are kept."""

    @property
    def settings(self) -> Settings: ...
    @property
    def ingestor(self) -> Ingestor: ...
    @property
    def store(self) -> OffsetStore: ...


async def subscribe(
    consumer: AIOConsumer,
    topics: Sequence[str],
    ready_file: Path | None,
    place: Callable[[AIOConsumer, list[TopicPartition]], Awaitable[None]] | None = None,
) -> None:
    """Subscribe; ``ready_file`` appears once the group has assigned partitions (readiness).

    ``place``: sets where each assigned partition starts and assigns them.
    """

    async def on_assign(c: AIOConsumer, partitions: list[TopicPartition]) -> None:
        if place is not None:
            await place(c, partitions)
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
    res: ConsumerResources,
    topics: Sequence[str],
    stop: asyncio.Event,
    group: str | None = None,
    ready_file: Path | None = None,
) -> None:
    """Consume ``topics`` until ``stop`` is set; the current batch is finished first, unless
    it is waiting for Redis or the broker (then it is left to the next consumer)."""
    settings = res.settings
    group = group or settings.consumer_group
    consumer = AIOConsumer(consumer_config(settings, group), max_workers=2)
    position = Position(res.store, group, stop)
    await subscribe(consumer, topics, ready_file, position.place)
    CONSUMER_LAST_APPLIED.set_to_current_time()  # "nothing applied for N minutes" starts here
    consumer_log().info("consuming", extra={"topics": list(topics), "group": group})
    inflight: deque[asyncio.Task[None]] = deque()
    # The outboxes of the tenants the offsets book knows: those of every batch applied,
    # also by a consumer that crashed before publishing its level changes.
    sweep = Sweep(res.ingestor, lambda: position.book.tenants() - {CATCH_ALL}, consumer_log())
    committed: dict[tuple[str, int], TopicPartition] = {}  # next offset per partition
    try:
        fetch: asyncio.Future[list[Message]]
        fetch = asyncio.ensure_future(next_batch(consumer, settings.batch_size))
        try:
            while not stop.is_set():
                if inflight:  # a batch that fails is seen at once, not when another comes
                    await asyncio.wait((fetch, inflight[0]), return_when=asyncio.FIRST_COMPLETED)
                if inflight and (inflight[0].done() or len(inflight) >= _IN_FLIGHT):
                    if not inflight[0].done():  # so the fetch is done: no poll in flight
                        await asyncio.wait((inflight[0],), timeout=MEASURE_EVERY_S)
                        await position.measure(consumer, topics)
                        if not inflight[0].done():
                            await _stay_in_group(consumer)
                        continue
                    try:
                        await inflight.popleft()
                    except OffsetsMoved:
                        await _drain(inflight)
                        fetch = await _restart(fetch, consumer, position, settings.batch_size)
                    continue
                messages = await fetch
                generation = position.generation  # placed anew during the fetch: the new one
                # Between two fetches, never beside a poll: a call waiting behind it would
                # hold the consumer's other thread, which a rebalance callback needs.
                await position.measure(consumer, topics)
                # Fetch the next batch while this one is applied.
                fetch = asyncio.ensure_future(next_batch(consumer, settings.batch_size))
                if batch := [m for m in messages if _usable(m)]:
                    previous = inflight[-1] if inflight else None
                    task = _apply_in_order(
                        res, consumer, position, (batch, generation), previous, committed
                    )
                    inflight.append(asyncio.create_task(task))
                # Busy or idle: a quiet tenant has no batch of its own to publish them.
                await sweep.due()
        except Misconfigured:
            raise
        except Unavailable:  # retries give up only once stop is set
            consumer_log().warning(
                "stopping while a dependency is down: the next consumer reads on"
            )
        fetch.cancel()
        # Left to the next consumer, which reads where to start from Redis.
        with contextlib.suppress(OffsetsMoved, Unavailable):
            await _drain(inflight, raising=True)
        if committed:
            await commit_offsets(consumer, list(committed.values()), wait=True)
    finally:
        await consumer.close()


async def _restart(
    fetch: asyncio.Future[list[Message]], consumer: AIOConsumer, position: Position, size: int
) -> asyncio.Future[list[Message]]:
    """Drop what was fetched, seek back to the offsets in Redis, fetch again from there."""
    with contextlib.suppress(KafkaException):
        await fetch  # its messages predate the seek: dropped
    await position.seek_back(consumer)
    return asyncio.ensure_future(next_batch(consumer, size))


async def _drain(inflight: deque[asyncio.Task[None]], *, raising: bool = False) -> None:
    """Wait for every task in flight; a later batch fails too once an earlier one did
    (moved offsets, or retries given up as the consumer stops)."""
    first: BaseException | None = None
    while inflight:
        try:
            await inflight.popleft()
        except Misconfigured:
            raise
        except (OffsetsMoved, Unavailable) as exc:
            first = first or exc
    if raising and first is not None:
        raise first


async def _apply_in_order(
    res: ConsumerResources,
    consumer: AIOConsumer,
    position: Position,
    fetched: tuple[Sequence[Message], int],
    previous: asyncio.Task[None] | None,
    committed: dict[tuple[str, int], TopicPartition],
) -> None:
    """Apply a batch once the previous one is applied (retrying while Redis or the broker
    is down, until the consumer stops), then commit its offsets to Kafka.

    ``fetched``: the messages and the position's generation they were fetched in. Once
    the partitions are placed anew (a rebalance can while batches are in flight) the
    batch is dropped: the offsets book now holds what Redis says, which after a failover
    that lost writes is behind the batch, and applying it would record its end for
    tenants whose lost events lie before it, skipping them for good. The new positions
    read the batch again if they still need it.

    Raises:
        OffsetsMoved: as the previous batch did, without applying anything.
        Unavailable: retries given up as the consumer stops (or the previous batch's).
    """
    messages, generation = fetched
    batch: Batch = res.ingestor.prepare([to_record(m) for m in messages])
    offsets = next_offsets(messages)
    ends = {partition_field(tp.topic, tp.partition): tp.offset for tp in offsets}
    if previous is not None:
        await previous
    async for attempt in retrying("dependency unavailable, retrying batch", position.stop):
        with attempt:
            if position.generation != generation:
                return _dropped(ends)
            await res.ingestor.apply(batch, (position.book, ends))
    if position.generation != generation:  # applied as the partitions were placed anew
        return _dropped(ends)  # its writes stand; where to go on is the new positions'
    position.applied.update(ends)
    CONSUMER_LAST_APPLIED.set_to_current_time()
    _measure_wait(messages)
    async for attempt in retrying("redis unavailable, retrying to advance offsets", position.stop):
        with attempt:
            await position.advance_idle({obs.tenant for obs, _ in batch.accepted})
    committed.update({(tp.topic, tp.partition): tp for tp in offsets})
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
        consumer_log().warning("offset commit failed", extra={"error": str(exc)})


async def _stay_in_group(consumer: AIOConsumer) -> None:
    """While batches wait out Redis or the broker, poll with every partition paused:
    librdkafka takes a consumer that does not poll for ``max.poll.interval.ms`` (300 s)
    out of its group, and the rebalance that follows moves its partitions for nothing.
    A record the poll returns all the same is sought back to, so it is fetched again."""
    assigned = await consumer.assignment()
    await consumer.pause(assigned)
    try:
        message = await consumer.poll(0)
        if message is not None and message.error() is None:
            place = TopicPartition(message.topic() or "", message.partition() or 0)
            place.offset = message.offset() or 0
            await consumer.seek(place)
    finally:
        with contextlib.suppress(KafkaException):  # a rebalance in the poll took some
            await consumer.resume(assigned)


def _dropped(ends: Ends) -> None:
    consumer_log().info(
        "batch fetched before the partitions were placed anew: dropped", extra={"ends": ends}
    )


def _measure_wait(messages: Sequence[Message]) -> None:
    """Per partition, how long the batch's oldest record waited in Kafka to be applied."""
    now_ms = time.time() * 1000
    seen: set[tuple[str, int]] = set()
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        if key in seen:
            continue
        seen.add(key)
        kind, at_ms = m.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE:
            CONSUMER_LAG.labels(key[0]).observe(max(0.0, (now_ms - at_ms) / 1000))


def _usable(message: Message) -> bool:
    err = message.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        consumer_log().warning("consumer error", extra={"error": str(err)})
    return False

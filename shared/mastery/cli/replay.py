"""``mastery replay --from-dlq TOPIC``: send dead-lettered records back, after a fix.

Reads the DLQ from its start to its current end (no consumer group: a replay is an
operator's one-off), strips the ``dlq_*`` headers and produces each record, with its
original key, value and headers, to the topic it was dead-lettered from. By default only
records that the engine would now accept are sent; the rest are listed with the reason
they would be refused again. Replaying twice is harmless: the event id makes a second
copy a duplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from mastery.errors import IgnoredEvent, InvalidEvent
from mastery.events.codec import decode
from mastery.events.kafka import (
    DLQ_HEADERS,
    KafkaPublisher,
    producer_config,
    reader_config,
    to_record,
)
from mastery.ports import OutMessage
from mastery.topics import DLQ_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from mastery.domain import ScoringModel
    from mastery.ports import Record
    from mastery.settings import Settings

__all__ = ["Replayed", "plan", "read_dlq", "send"]


@dataclass(frozen=True, slots=True)
class Replayed:
    """One dead-lettered record: where it sits, what it was, and what would happen now."""

    dlq_offset: tuple[int, int]  # partition, offset in the DLQ
    record: Record  # as it was before it was dead-lettered
    reason: str  # why it was dead-lettered
    verdict: str | None  # None: accepted now; else why it would be refused again


def read_dlq(settings: Settings, topic: str, timeout_s: float = 30) -> Iterator[Record]:
    """Every record the DLQ ``topic`` holds now, partition by partition."""
    if not topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{topic} is not a dead-letter topic (*{DLQ_SUFFIX})")
    consumer = Consumer(reader_config(settings))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ValueError(f"no topic {topic}")
        # To the partition's end (EOF), not its high watermark: Tansu reports the base
        # offset of the last record batch there, and a batch's dead letters are one.
        for partition in sorted(meta.partitions):
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            position = -1
            while True:
                message = consumer.poll(timeout_s)
                if message is None:
                    raise TimeoutError(f"{topic}[{partition}] stalled at offset {position}")
                error = message.error()
                if error is None:
                    position = message.offset() or 0
                    yield to_record(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    break
    finally:
        consumer.close()


def plan(dead: Record, now: datetime, model: ScoringModel) -> Replayed:
    """What replaying ``dead`` would do: the original record and whether it passes now."""
    headers = {k: v for k, v in dead.headers.items() if k not in DLQ_HEADERS}
    source = dead.headers.get("dlq_topic", b"").decode() or dead.topic.removesuffix(DLQ_SUFFIX)
    original = replace(dead, topic=source, headers=headers)
    try:
        decode(original, now, model)
        verdict = None
    except InvalidEvent as exc:
        verdict = exc.reason
    except IgnoredEvent as exc:  # taken, but to no effect (an xAPI statement too old now)
        verdict = f"ignored: {exc.reason}"
    reason = dead.headers.get("dlq_reason", b"").decode()
    return Replayed((dead.partition, dead.offset), original, reason, verdict)


def send(settings: Settings, items: list[Replayed]) -> None:
    """Produce the records to their topics, awaiting each delivery report.

    Raises:
        Unavailable: the broker did not acknowledge every record (a record that timed out
            leaves the producer's queue too: only its report says it was not sent).
    """
    publisher = KafkaPublisher(producer_config(settings))
    messages = [
        OutMessage(r.topic, r.value, r.key, list(r.headers.items()))
        for r in (item.record for item in items)
    ]
    try:
        asyncio.run(publisher.publish(messages))
    finally:
        publisher.close()

"""Learning events as producers send them: Avro data in a binary-mode CloudEvent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Producer

from mastery.events.codec import encode
from mastery.events.kafka import create_topics, producer_config
from mastery.topics import event_topic

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from mastery.domain import Component
    from mastery.settings import Settings

__all__ = ["KafkaEvent", "create_event_topics", "learning_event", "produce_all"]


@dataclass(frozen=True, slots=True)
class KafkaEvent:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def learning_event(
    component: Component,
    *,
    event_id: str,
    tenant: str,
    student: str,
    score: float,
    occurred_at: datetime,
    class_id: str | None = None,
) -> KafkaEvent:
    data = {
        "student_id": student,
        "tenant": tenant,
        "occurred_at": occurred_at.isoformat(),
        "score": score,
        "class_id": class_id,
        "area": None,
    }
    value, encoded = encode(component, data, event_id=event_id)
    headers: list[tuple[str, str | bytes | None]] = list(encoded)
    return KafkaEvent(event_topic(component), student.encode(), value, headers)


def create_event_topics(settings: Settings, components: Iterable[Component]) -> list[str]:
    """The components' topics (partitions from ``settings``), created with the stack's others."""
    create_topics(settings)
    return [event_topic(c) for c in components]


def produce_all(settings: Settings, events: Iterable[KafkaEvent]) -> None:
    """Produce and wait until the broker acknowledged every event (bulk settings: untimed)."""
    config = producer_config(settings) | {
        "log_level": 4,  # no info-level chatter (e.g. purging its queue at exit)
        "linger.ms": 20,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    failed = 0

    def on_delivery(err: object, _: object) -> None:
        nonlocal failed
        failed += err is not None

    producer = Producer(config)
    for e in events:
        while True:
            try:
                producer.produce(
                    e.topic, e.value, e.key, headers=e.headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"the broker did not acknowledge every event ({failed} failed)")

"""Learning events as producers send them (Avro data in a binary-mode CloudEvent), and
how many of them Redis holds.

The backlogs' students are ``s<n>`` of tenant ``school-<n % tenants>``; every event
appends one entry to its tenant's audit stream, so with few enough events per tenant
(below the stream's MAXLEN) the sum of XLEN counts the events processed exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from confluent_kafka import Producer

from mastery.events.codec import encode
from mastery.events.kafka import create_topics, producer_config
from mastery.ports import Record
from mastery.store import keys
from mastery.topics import event_topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from mastery.domain import Component
    from mastery.settings import Settings

__all__ = [
    "KafkaEvent",
    "audited",
    "backlog",
    "create_event_topics",
    "learning_event",
    "produce_all",
    "sum_versions",
    "wait_until_audited",
]


@dataclass(frozen=True, slots=True)
class KafkaEvent:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]

    def record(self) -> Record:
        """The record a consumer reads back (``mastery.events.kafka.to_record``'s form)."""
        headers = {k: v if isinstance(v, bytes) else (v or "").encode() for k, v in self.headers}
        return Record(self.topic, self.value, self.key, headers)


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


def backlog(
    count: int,
    components: Sequence[Component],
    *,
    students: int,
    tenants: int,
    prefix: str,
    seed: int = 2,
) -> list[KafkaEvent]:
    """``count`` events with ids ``<prefix>-<i>``, round-robin over ``components``, each
    for a random student, with a random score, occurred within the last day."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = []
    for i in range(count):
        n = rng.randrange(students)
        events.append(
            learning_event(
                components[i % len(components)],
                event_id=f"{prefix}-{i}",
                tenant=f"school-{n % tenants}",
                student=f"s{n}",
                score=round(rng.random(), 3),
                occurred_at=now - timedelta(seconds=rng.randrange(86_400)),
                class_id=f"c{n % 50}",
            )
        )
    return events


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


async def audited(client: Redis | RedisCluster, tenants: int) -> int:
    """Events processed (applied or not): the entries of the tenants' audit streams."""
    async with client.pipeline(transaction=False) as pipe:
        for t in range(tenants):
            pipe.xlen(keys.audit(f"school-{t}"))
        return sum(await pipe.execute())


async def sum_versions(client: Redis | RedisCluster, students: int, tenants: int) -> int:
    """Events applied: the sum of every student's state version."""
    total = 0
    for first in range(0, students, 5000):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(first, min(first + 5000, students)):
                pipe.hget(keys.state(f"school-{n % tenants}", f"s{n}"), "version")
            total += sum(int(v or 0) for v in await pipe.execute())
    return total


async def wait_until_audited(
    client: Redis | RedisCluster,
    expected: int,
    tenants: int,
    timeout: float,
    failed: Callable[[], str | None],
) -> float:
    """The moment the audit streams hold ``expected`` entries (polled every 10 ms).

    ``failed``: why to give up now (a process died), else ``None``.
    """
    deadline = time.monotonic() + timeout
    while (count := await audited(client, tenants)) < expected:
        reason = failed()
        if reason is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{count} of {expected} events processed: {reason or 'timed out'}")
        await asyncio.sleep(0.01)
    return time.monotonic()

"""Builders shared by the integration and e2e tests."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mcp_types
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from mastery.domain import Component
from mastery.events.codec import AVRO, encode
from mastery.events.kafka import consumer_config, create_topics, producer_config
from mastery.ports import Record
from mastery.store import keys
from mastery.topics import LEVEL_CHANGED_TOPIC, event_topic, with_dead_letters

if TYPE_CHECKING:
    from collections.abc import Sequence

    from confluent_kafka import Message
    from redis.asyncio import Redis

    from mastery.settings import Settings


def event_data(
    tenant: str, student: str, score: float = 0.5, at: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "student_id": student,
        "tenant": tenant,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        "score": score,
        **extra,
    }


def record(
    component: Component,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    topic: str | None = None,
    content_type: str = AVRO,
) -> Record:
    value, headers = encode(
        component, data, event_id=event_id or uuid.uuid4().hex, content_type=content_type
    )
    return Record(
        topic or event_topic(component), value, data["student_id"].encode(), dict(headers)
    )


def binary_ce(
    component: Component, data: dict[str, Any], event_id: str
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an HTTP delivery of an event, as KafkaSource posts it
    (CloudEvents binary mode, JSON data)."""
    rec = record(component, data, event_id=event_id, content_type="application/json")
    headers = {f"ce-{k[3:]}": v.decode() for k, v in rec.headers.items() if k.startswith("ce_")}
    return rec.value or b"", {**headers, "content-type": "application/json"}


def committed(settings: Settings, topic: str, group: str) -> int:
    """How many records the group has committed past, over every partition of ``topic``.

    (Offsets start at 0 and have no gaps here; Tansu's high watermark can lag behind
    the log's end, so it is not the measure.)
    """
    c = Consumer(consumer_config(settings, group))
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


async def wait_committed(
    settings: Settings, topic: str, group: str, records: int, timeout: float = 60
) -> None:
    """Wait until the group has committed past all ``records`` of ``topic``: a consumer
    commits a batch only once it is applied, so nothing of the topic is still to come."""
    deadline = time.monotonic() + timeout
    while (done := await asyncio.to_thread(committed, settings, topic, group)) < records:
        assert time.monotonic() < deadline, f"{group} committed {done} of {records} records"
        await asyncio.sleep(0.1)


def fresh_topics(settings: Settings, *names: str) -> list[str]:
    """Unique topics (and their DLQs) for one test, so tests never read each other's records."""
    suffix = uuid.uuid4().hex[:8]
    topics = [f"{name}-{suffix}" for name in names]
    create_topics(settings, with_dead_letters(topics))
    return topics


def produce(settings: Settings, records: list[Record]) -> None:
    producer = Producer(producer_config(settings))
    for r in records:
        producer.produce(r.topic, r.value, r.key, headers=list(r.headers.items()))
    assert producer.flush(15) == 0, "broker did not acknowledge every record"


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30) -> list[Message]:
    """Read ``topic`` from the start until ``expected`` records arrived (or time runs out)."""
    consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
    # assign(), not subscribe(): no group join, so reading starts at once.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [m for m in consumer.consume(100, 0.2) if m.error() is None]
    finally:
        consumer.close()
    return got


def read_to_end(settings: Settings, topic: str, timeout: float = 30) -> list[Message]:
    """Every record ``topic`` holds now: read from the start up to each partition's end."""
    consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got: list[Message] = []
    todo = {p for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + timeout
    try:
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                if m.error() is None:
                    got.append(m)
                    if m.offset() >= ends[m.partition()] - 1:
                        todo.discard(m.partition())
    finally:
        consumer.close()
    assert not todo, f"{topic}: partitions {sorted(todo)} not read to the end in {timeout}s"
    return got


def level_changes(settings: Settings, tenant: str) -> list[Message]:
    """The level changes announced so far for ``tenant`` (``mastery.level-changed``)."""
    return [
        m
        for m in read_to_end(settings, LEVEL_CHANGED_TOPIC)
        if orjson.loads(m.value() or b"{}").get("tenant") == tenant
    ]


def headers_of(message: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (message.headers() or [])}


def resent_stream(
    topic: str, tenants: Sequence[str], students: Sequence[str], n: int, seed: int
) -> tuple[list[Record], list[Record]]:
    """``n`` unique events plus 30 % redeliveries, shuffled; returns (stream, unique)."""
    rng = random.Random(seed)
    unique = [
        record(
            rng.choice(list(Component)),
            event_data(rng.choice(tenants), rng.choice(students), round(rng.random(), 3)),
            event_id=f"{seed}-{i}",
            topic=topic,
        )
        for i in range(n)
    ]
    stream = unique + rng.sample(unique, int(n * 0.3))
    rng.shuffle(stream)
    return stream, unique


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``mastery`` process started by a test: the test's servers."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "MASTERY_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        **extra,
    }


async def keys_of_student(redis: Redis, tenant: str, student: str) -> list[bytes]:
    """Every key held under the student's prefix (a SCAN, as an auditor would run it)."""
    prefix = keys.student_prefix(tenant, student)
    return [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]


def xapi_statement(
    student: str,
    verb: str = "scored",
    *,
    scaled: float | None = 0.8,
    home_page: str = "https://lms.example",
    class_id: str | None = "c1",
    at: datetime | None = None,
    statement_id: str | None = None,
) -> dict[str, Any]:
    """A statement as an LRS client sends it, built with the `tincan` library."""
    import tincan

    kwargs: dict[str, Any] = {
        "id": uuid.UUID(statement_id) if statement_id else uuid.uuid4(),
        "actor": tincan.Agent(account=tincan.AgentAccount(name=student, home_page=home_page)),
        "verb": tincan.Verb(id=f"http://adlnet.gov/expapi/verbs/{verb}"),
        "object": tincan.Activity(id=f"{home_page}/activity/quiz-1"),
        "timestamp": (at or datetime.now(UTC)).isoformat(),
    }
    if scaled is not None:
        kwargs["result"] = tincan.Result(score=tincan.Score(scaled=scaled))
    if class_id is not None:
        grouping = tincan.ActivityList([tincan.Activity(id=f"{home_page}/course/{class_id}")])
        kwargs["context"] = tincan.Context(
            context_activities=tincan.ContextActivities(grouping=grouping)
        )
    doc: dict[str, Any] = orjson.loads(tincan.Statement(**kwargs).to_json("1.0.3"))
    return doc


def xapi_voiding(
    student: str,
    voided_id: str,
    *,
    home_page: str = "https://lms.example",
    at: datetime | None = None,
) -> dict[str, Any]:
    """A voiding statement (verb ``voided``, object a StatementRef), built with `tincan`."""
    import tincan

    statement = tincan.Statement(
        id=uuid.uuid4(),
        actor=tincan.Agent(account=tincan.AgentAccount(name=student, home_page=home_page)),
        verb=tincan.Verb(id="http://adlnet.gov/expapi/verbs/voided"),
        object=tincan.StatementRef(id=uuid.UUID(voided_id)),
        timestamp=(at or datetime.now(UTC)).isoformat(),
    )
    doc: dict[str, Any] = orjson.loads(statement.to_json("1.0.3"))
    return doc


def tool_problem(result: mcp_types.CallToolResult) -> dict[str, Any]:
    """The problem document of an MCP tool error: the JSON text after its sentence."""
    assert result.is_error, result.content
    last = result.content[-1]
    assert isinstance(last, mcp_types.TextContent), result.content
    doc: dict[str, Any] = orjson.loads(last.text)
    return doc

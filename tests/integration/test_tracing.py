"""Trace context from producer to state and out again, on real Redis and a real broker.

Spans go to the OpenTelemetry SDK's in-memory exporter (its own test exporter); what the
engine publishes is read back from Kafka and its ``traceparent`` headers checked.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson

from mastery import tracing
from mastery.bootstrap import build
from mastery.domain import Component
from mastery.events.consumer import consume
from mastery.store import keys
from mastery.topics import AUDIT_TOPIC, LEVEL_CHANGED_TOPIC, dlq_topic, event_topic
from mastery.web.events import event_handler
from mastery.web.query import query_mastery
from tests.helpers import (
    event_data,
    fresh_topics,
    headers_of,
    level_changes,
    produce,
    read_to_end,
    record,
)
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from confluent_kafka import Message
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from redis.asyncio import Redis

    from mastery.ports import Record
    from mastery.settings import Settings


def _producer_context() -> tuple[str, str, str]:
    """A producer's ``traceparent``, its trace id and span id (hex)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _traced(rec: Record, traceparent: str) -> Record:
    return type(rec)(
        rec.topic,
        rec.value,
        rec.key,
        {**rec.headers, "ce_traceparent": traceparent.encode()},
        rec.partition,
        rec.offset,
    )


def _http_delivery(rec: Record) -> dict[str, str]:
    """KafkaSource's binary-mode delivery: each ``ce_x`` header as ``ce-x``."""
    return {
        (f"ce-{k[3:]}" if k.startswith("ce_") else k): v.decode() for k, v in rec.headers.items()
    }


def _trace_of(message: Message) -> str:
    headers = headers_of(message)
    assert headers["ce_traceparent"] == headers["traceparent"]
    names = [k for k, _ in message.headers() or []]
    assert names.count("traceparent") == names.count("ce_traceparent") == 1
    return headers["traceparent"].split("-")[1]


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _accepted(span: ReadableSpan) -> int:
    value = (span.attributes or {}).get("mastery.accepted", 0)
    return value if isinstance(value, int) else 0


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_an_event_delivered_over_http_continues_its_producers_trace_to_what_it_publishes(
    settings: Settings, tenant: str, spans: InMemorySpanExporter
) -> None:
    res = build(settings, source="on-quiz")
    app = serve("on-quiz", {"POST /": event_handler(Component.QUIZ)}, res, uses_auth=False)
    at = datetime.now(UTC) - timedelta(minutes=5)
    low = record(Component.QUIZ, event_data(tenant, "s1", 0.0, at))
    high = record(Component.QUIZ, event_data(tenant, "s1", 1.0, at + timedelta(minutes=1)))
    bad = record(Component.QUIZ, event_data(tenant, "s1", 0.5, at))
    bad = type(bad)(bad.topic, b"not avro", bad.key, bad.headers)
    # Placed at competent (0.7) without a trace; the quiz events move them to proficient.
    await res.ingestor.ingest(
        [
            record(c, event_data(tenant, "s1", 1.0, at - timedelta(minutes=1)))
            for c in (Component.COMPLETION, Component.QUALITY, Component.CONSISTENCY)
        ]
    )
    producers = [_producer_context() for _ in range(3)]
    async with app:
        for rec, (parent, _, _) in zip((low, high, bad), producers, strict=True):
            answer = await app.post(
                "/", content=rec.value, headers=_http_delivery(_traced(rec, parent))
            )
            assert answer.status_code == 200, answer.text
    await res.aclose()

    # Each delivery continues its producer's trace: request span -> apply -> redis, publish.
    for _, trace_id, span_id in producers:
        [server] = [
            s for s in spans.get_finished_spans() if s.name == "POST /" and _hex(s)[0] == trace_id
        ]
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == span_id
        [apply] = [s for s in _named(spans, "mastery.apply_batch") if _hex(s)[0] == trace_id]
        assert apply.parent is not None
        assert apply.parent.span_id == server.context.span_id
    [redis_apply] = [s for s in _named(spans, "redis apply") if _hex(s)[0] == producers[1][1]]
    assert redis_apply.kind is tracing.SpanKind.CLIENT

    # The level change (competent -> proficient) was announced within the second event's trace.
    [change] = level_changes(settings, tenant)
    assert _trace_of(change) == producers[1][1]
    [publish] = [
        s
        for s in spans.get_finished_spans()
        if s.name == f"{LEVEL_CHANGED_TOPIC} publish" and _hex(s)[0] == producers[1][1]
    ]
    assert headers_of(change)["traceparent"].split("-")[2] == _hex(publish)[1]

    # The dead letter carries the bad event's trace, once (its own header was replaced).
    [dead] = [
        m
        for m in read_to_end(settings, dlq_topic(event_topic(Component.QUIZ)))
        if headers_of(m).get("ce_id") == bad.headers["ce_id"].decode()
    ]
    assert _trace_of(dead) == producers[2][1]


async def test_a_query_continues_the_callers_trace_into_the_state_read_and_the_access_audit(
    settings: Settings, tenant: str, spans: InMemorySpanExporter
) -> None:
    res = build(settings, source="mastery-query")
    await res.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s1", 0.7))])
    parent, trace_id, span_id = _producer_context()
    correlation = uuid.uuid4().hex
    app = serve("mastery-query", {"POST /mastery/query": query_mastery}, res)
    async with app:
        answer = await app.post(
            "/mastery/query",
            json={"student_id": "s1"},
            headers={
                **token("s1", "student", tenant),
                "traceparent": parent,
                "x-correlation-id": correlation,
            },
        )
    await res.aclose()
    assert answer.status_code == 200, answer.text

    [server] = [s for s in _named(spans, "POST /mastery/query") if _hex(s)[0] == trace_id]
    assert server.kind is tracing.SpanKind.SERVER
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == span_id
    assert server.attributes is not None
    assert server.attributes["http.route"] == "POST /mastery/query"
    assert server.attributes["http.response.status_code"] == 200
    [read] = [s for s in _named(spans, "redis state read") if _hex(s)[0] == trace_id]
    assert read.parent is not None
    assert read.parent.span_id == server.context.span_id

    [audit] = [
        m
        for m in read_to_end(settings, AUDIT_TOPIC)
        if orjson.loads(m.value() or b"{}").get("correlation_id") == correlation
    ]
    assert _trace_of(audit) == trace_id


async def test_a_consumer_batch_links_every_producer_and_a_lone_event_continues_its_trace(
    settings: Settings, redis: Redis, tenant: str, spans: InMemorySpanExporter
) -> None:
    [topic] = fresh_topics(settings, "traced")
    producers = [_producer_context() for _ in range(5)]
    records = [
        _traced(record(Component.QUIZ, event_data(tenant, f"s{i}", 0.5), topic=topic), parent)
        for i, (parent, _, _) in enumerate(producers)
    ]
    produce(settings, records)

    res = build(settings, source="mastery-consume")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        for _ in range(300):
            applies = _named(spans, "mastery.apply_batch")
            if sum(_accepted(s) for s in applies) >= 5:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()

    applies = _named(spans, "mastery.apply_batch")
    linked = {format(link.context.trace_id, "032x") for s in applies for link in s.links}
    continued = {_hex(s)[0] for s in applies}
    # Every producer's trace reaches an apply: as a link of a batch, or as the trace of a
    # batch that held only its event.
    assert {trace_id for _, trace_id, _ in producers} <= linked | continued
    for i in range(5):  # one key a call: a cluster refuses keys of several slots
        assert await redis.exists(keys.state(tenant, f"s{i}"))

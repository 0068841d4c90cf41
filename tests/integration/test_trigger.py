"""The local KafkaSource stand-in: a sink that keeps refusing gets its records dead-lettered."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mastery.bootstrap import build
from mastery.dev.trigger import run_trigger
from mastery.domain import Component
from mastery.topics import dlq_topic
from tests.helpers import event_data, fresh_topics, headers_of, produce, read_topic, record

if TYPE_CHECKING:
    from mastery.settings import Settings


async def test_undeliverable_records_go_to_the_dlq_and_the_partition_moves_on(
    settings: Settings, tenant: str
) -> None:
    [topic] = fresh_topics(settings, "trigger")
    records = [
        record(Component.QUIZ, event_data(tenant, "s1"), event_id=f"{tenant}-{i}", topic=topic)
        for i in range(3)
    ]
    produce(settings, records)

    res = build(settings, source="test")
    stop = asyncio.Event()
    dead_sink = "http://127.0.0.1:1/"  # nothing listens there: every delivery fails
    task = asyncio.create_task(run_trigger(res, topic, dead_sink, stop, retries=1))
    try:
        dead = await asyncio.to_thread(read_topic, settings, dlq_topic(topic), 3, 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()

    assert sorted(headers_of(m)["ce_id"] for m in dead) == [f"{tenant}-{i}" for i in range(3)]
    assert all(headers_of(m)["dlq_reason"].startswith("delivery failed") for m in dead)
    assert all(headers_of(m)["dlq_topic"] == topic for m in dead)
    assert [m.value() for m in sorted(dead, key=lambda m: headers_of(m)["ce_id"])] == [
        r.value for r in records
    ]

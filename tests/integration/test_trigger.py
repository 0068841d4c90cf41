"""The local KafkaSource stand-in: each record reaches the sink, retried until accepted,
``in_flight`` at a time, before its offset is committed; a sink that keeps refusing gets
its records dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

from mastery.bootstrap import build
from mastery.dev.servers import free_port
from mastery.dev.trigger import run_trigger
from mastery.domain import Component
from mastery.topics import dlq_topic
from tests.helpers import (
    event_data,
    fresh_topics,
    headers_of,
    produce,
    read_to_end,
    read_topic,
    record,
    wait_committed,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

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


async def test_each_record_is_retried_until_accepted_in_flight_at_a_time_then_committed(
    settings: Settings, tenant: str
) -> None:
    [topic] = fresh_topics(settings, "trigger")
    records = [
        record(Component.QUIZ, event_data(tenant, f"s{i}"), event_id=f"{tenant}-{i}", topic=topic)
        for i in range(24)
    ]
    produce(settings, records)
    bodies = {r.headers["ce_id"].decode(): r.value for r in records}
    accepted: list[str] = []
    refused: set[str] = set()
    busy = [0, 0]  # now, most at once

    async def handler(request: web.Request) -> web.Response:
        busy[0] += 1
        busy[1] = max(busy)
        try:
            await asyncio.sleep(0.01)  # a handler's Redis round trip: the others come in
            ce_id = request.headers["ce-id"]
            assert await request.read() == bodies[ce_id]
            assert request.headers["ce-type"] == "mastery.quiz.v1"
            if ce_id not in refused:  # each first delivery: 503, as when Redis is down
                refused.add(ce_id)
                return web.Response(status=503)
            accepted.append(ce_id)
            return web.json_response({"outcome": "applied"})
        finally:
            busy[0] -= 1

    # Batches of 5: several in flight, each committed after its records are accepted.
    res = build(settings.model_copy(update={"batch_size": 5}), source="test")
    stop = asyncio.Event()
    async with _serving(handler) as sink:
        task = asyncio.create_task(run_trigger(res, topic, sink, stop, retries=2, in_flight=4))
        try:
            await wait_committed(settings, topic, f"mastery-trigger-{topic}", len(records))
            when_committed = sorted(accepted)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await res.aclose()

    assert when_committed == sorted(bodies)  # each once, after its refusal, before the commit
    assert sorted(accepted) == sorted(bodies)
    assert refused == set(bodies)
    assert 1 <= busy[1] <= 4
    assert await asyncio.to_thread(read_to_end, settings, dlq_topic(topic)) == []


@contextlib.asynccontextmanager
async def _serving(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A sink on a free loopback port for the block; its URL."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()

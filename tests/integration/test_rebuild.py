"""``mastery rebuild``: a tenant's Redis data deleted, then rebuilt from Kafka, is as before.

A broker of its own (the event topics are read whole, so no other test's records may be
in them) and the session's Redis, where only this test's tenant is deleted. The events
go in through the ingest path, as a trigger or consumer would send them; then every key
of the tenant is deleted, the command runs, and the query functions answer exactly as
they did before. An erased student stays erased, a refused record is not dead-lettered
twice, and no level change is announced again.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from redis.asyncio import Redis

from mastery.bootstrap import build
from mastery.cli import main
from mastery.cli.rebuild import rebuild
from mastery.dev import servers
from mastery.domain import Component
from mastery.domain.days import DAY_MAX
from mastery.events.kafka import consumer_config, create_topics, to_record
from mastery.ports import Record
from mastery.settings import Settings
from mastery.store import keys
from mastery.topics import (
    AUDIT_TOPIC,
    EVENT_TOPICS,
    LEVEL_CHANGED_TOPIC,
    XAPI_TOPIC,
    dlq_topic,
    event_topic,
)
from mastery.web.access import access_record
from mastery.web.auth import Principal, Role
from mastery.web.xapi import post_statements
from tests.helpers import (
    event_data,
    fresh_topics,
    headers_of,
    level_changes,
    produce,
    read_to_end,
    record,
    xapi_statement,
    xapi_voiding,
)
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import httpx
    from click.testing import Result

_STUDENTS = ("s1", "s2", "s3")
_ERASED = "s9"
_VARYING = {"correlation_id", "updated_at"}


@pytest.fixture(scope="module")
def own_settings(settings: Settings) -> Iterator[Settings]:
    """The session's Redis (either topology) with a broker of the test's own."""
    port = servers.free_port()
    broker = servers.start_tansu(port)
    settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    create_topics(settings)
    yield settings
    broker.kill()  # memory storage: nothing to shut down cleanly, and SIGTERM takes seconds
    broker.wait()


def _events(tenant: str) -> list[Record]:
    """A few weeks of events for three students in two classes, and one to be erased."""
    now = datetime.now(UTC)
    records = []
    for i, student in enumerate(_STUDENTS):
        for day in range(0, 30, 3):
            for c, component in enumerate(Component):
                at = now - timedelta(days=day, hours=i + c)
                score = round(0.2 + 0.02 * day + 0.1 * i + 0.05 * c, 3) % 1
                data = event_data(tenant, student, score, at=at, class_id=f"c{i % 2}")
                records.append(record(component, data))
    erased_at = now - timedelta(days=40)
    records += [record(Component.QUIZ, event_data(tenant, _ERASED, 0.9, at=erased_at))]
    records += [record(Component.QUIZ, {**event_data(tenant, "s1"), "score": 7.0})]  # refused
    return records


def _read_all(settings: Settings, topics: list[str]) -> list[Record]:
    return [to_record(m) for topic in topics for m in read_to_end(settings, topic)]


async def _answers(
    client: Callable[[str], httpx.AsyncClient],
    tenant: str,
    students: Sequence[str] = (*_STUDENTS, _ERASED),
) -> dict[tuple[str, str], object]:
    admin = token("a1", "admin", tenant)
    answers: dict[tuple[str, str], object] = {}
    for name, path, extra in (
        ("mastery-query", "/mastery/query", {}),
        ("mastery-history", "/analytics/mastery-history", {"days": 30}),
        ("cohort-compare", "/analytics/compare", {}),
    ):
        fn = client(name)
        for student in students:
            resp = await fn.post(path, headers=admin, json={"student_id": student, **extra})
            # Per request, and when Redis last wrote the state (a rebuild writes it anew).
            doc = {k: v for k, v in resp.json().items() if k not in _VARYING}
            answers[(name, student)] = (resp.status_code, doc)
    return answers


def _env(settings: Settings) -> dict[str, str]:
    """The command's environment: the test's Redis (either topology) and broker."""
    return {
        "REDIS_URL": settings.redis_url,
        "MASTERY_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }


async def _mastery(env: dict[str, str], *args: str) -> Result:
    """Run the command in a thread: it starts an event loop of its own."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


async def _delete_tenant(redis: Redis, tenant: str) -> int:
    """Every key naming the tenant (its ids are unique to this test)."""
    doomed = [key async for key in redis.scan_iter(match=f"*{tenant}*", count=1000)]
    if doomed:
        await redis.delete(*doomed)
    return len(doomed)


async def test_rebuild_restores_what_was_lost(
    own_settings: Settings,
    client: Callable[[str], httpx.AsyncClient],
    redis: Redis,
    tenant: str,
) -> None:
    produce(own_settings, _events(tenant))
    topics = list(EVENT_TOPICS)
    res = build(own_settings, source="test")
    try:
        await res.ingestor.ingest(_read_all(own_settings, topics))
        erased_at = datetime.now(UTC)
        await res.store.erase(tenant, _ERASED, erased_at)
        admin = Principal("a1", Role.ADMIN, tenant)
        erased = access_record(
            function="gdpr-erase",
            route="POST /gdpr/erase",
            correlation_id=uuid.uuid4().hex,
            principal=admin,
            students=[_ERASED],
            status=200,
            at=erased_at,
        )
        await res.publisher.publish([erased])
    finally:
        await res.aclose()
    before = await _answers(client, tenant)
    assert before[("mastery-query", "s1")][0] == 200
    assert before[("mastery-query", _ERASED)][0] == 404
    dead_letters = len(read_to_end(own_settings, dlq_topic(event_topic(Component.QUIZ))))
    announced = len(read_to_end(own_settings, LEVEL_CHANGED_TOPIC))
    assert dead_letters == 1
    assert read_to_end(own_settings, AUDIT_TOPIC)  # the erasure is on record

    assert await _delete_tenant(redis, tenant) > 0
    lost = await _answers(client, tenant)
    assert lost[("mastery-query", "s1")][0] == 404

    env = _env(own_settings)
    result = await _mastery(env, "rebuild", "--batch-size", "50")
    assert result.exit_code == 0, result.output
    total = len(_STUDENTS) * 10 * len(Component) + 2
    assert "erasures replayed: 1" in result.output
    fed = f"fed: {total - 2} applied, 1 erased; skipped: 1"
    assert f"records read: {total}; {fed}" in result.output, result.output
    assert "score" in result.output  # why the one record was skipped

    assert await _answers(client, tenant) == before
    assert len(read_to_end(own_settings, dlq_topic(event_topic(Component.QUIZ)))) == dead_letters
    assert len(read_to_end(own_settings, LEVEL_CHANGED_TOPIC)) == announced

    # Safe to repeat: everything is a duplicate the second time.
    again = await _mastery(env, "rebuild")
    assert again.exit_code == 0, again.output
    assert f"fed: {total - 2} duplicate, 1 erased; skipped: 1" in again.output, again.output
    assert await _answers(client, tenant) == before


async def test_rebuild_restores_xapi_statements_posted_forwarded_and_voided(
    own_settings: Settings,
    client: Callable[[str], httpx.AsyncClient],
    redis: Redis,
    tenant: str,
) -> None:
    home = f"https://{tenant}.lms.example"
    mapping = {home: tenant}
    now = datetime.now(UTC)
    # Posted over HTTP (the tenant is the token's: no mapping for their homePage) ...
    quiz = xapi_statement("x1", "scored", scaled=0.6, at=now - timedelta(days=2))
    done = xapi_statement("x1", "completed", scaled=1.0, at=now - timedelta(days=1))
    wrong = xapi_statement("x1", "scored", scaled=0.1, at=now - timedelta(hours=3))
    voiding = xapi_voiding("x1", str(wrong["id"]))
    # ... and forwarded on the topic (the tenant from the homePage), one voided.
    forwarded = xapi_statement("x2", "passed", scaled=0.9, home_page=home, at=now)
    mistaken = xapi_statement("x2", "failed", scaled=0.2, home_page=home, at=now)
    on_topic = [
        Record(XAPI_TOPIC, orjson.dumps(st), b"x2", {"content-type": b"application/json"})
        for st in (forwarded, mistaken, xapi_voiding("x2", str(mistaken["id"]), home_page=home))
    ]
    produce(own_settings, on_topic)
    res = build(own_settings.model_copy(update={"xapi_tenants": mapping}), source="test")
    try:
        async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
            headers = {**token("a1", "admin", tenant), "x-experience-api-version": "1.0.3"}
            for body in ([quiz, done, wrong], voiding):
                resp = await fn.post("/xapi/statements", json=body, headers=headers)
                assert resp.status_code == 200, resp.text
        await res.ingestor.ingest([to_record(m) for m in read_to_end(own_settings, XAPI_TOPIC)])
    finally:
        await res.aclose()
    before = await _answers(client, tenant, ("x1", "x2"))
    query = before[("mastery-query", "x1")]
    assert query[0] == 200
    assert query[1]["components"]["quiz"]["score"] == 0.6  # type: ignore[index]
    assert before[("mastery-query", "x2")][1]["components"]["quiz"]["events"] == 1  # type: ignore[index]

    assert await _delete_tenant(redis, tenant) > 0
    assert (await _answers(client, tenant, ("x1",)))[("mastery-query", "x1")][0] == 404
    env = {**_env(own_settings), "MASTERY_XAPI_TENANTS": orjson.dumps(mapping).decode()}
    result = await _mastery(env, "rebuild")
    assert result.exit_code == 0, result.output
    assert "voiding" in result.output, result.output
    assert await _answers(client, tenant, ("x1", "x2")) == before


async def test_rebuild_refuses_past_a_full_day_record_without_dead_lettering_again(
    own_settings: Settings, redis: Redis, tenant: str
) -> None:
    """The store refuses a student's 65,536th event of one component and day; a rebuild
    refuses it again, counts it as skipped and does not dead-letter it a second time."""
    at = datetime.now(UTC) - timedelta(days=1)
    data = event_data(tenant, "busy", 0.5, at=at)
    produce(own_settings, [record(Component.QUIZ, data) for _ in range(DAY_MAX + 1)])
    dead_letters = len(read_to_end(own_settings, dlq_topic(event_topic(Component.QUIZ))))
    env = _env(own_settings)
    result = await _mastery(env, "rebuild", "--batch-size", "2000")
    assert result.exit_code == 0, result.output
    reason = (
        f"the student already has {DAY_MAX} quiz events on this day: a day record holds no more"
    )
    assert f"skipped 1: {event_topic(Component.QUIZ)}: {reason}" in result.output, result.output
    assert len(read_to_end(own_settings, dlq_topic(event_topic(Component.QUIZ)))) == dead_letters
    res = build(own_settings, source="test")
    try:
        days = await res.store.days_of(tenant, "busy")
    finally:
        await res.aclose()
    assert days is not None
    assert [d.events[Component.QUIZ].count for d in days.activity] == [DAY_MAX]


async def test_a_rebuild_dead_letters_and_announces_the_backlog_no_consumer_read(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """Redis was lost and `mastery consume` stood still (it committed offset 1 in Kafka)
    while two more records came: a level change and an invalid event. The rebuild reads
    them with the rest, but no consumer handled them: the change is announced and the
    invalid one dead-lettered, as a consumer would have (the rebuild took every record
    for one handled before, and set the group's offsets past them: found by a durability
    reviewer). The record before the commit is replayed silently, as ever."""
    create_topics(settings, [AUDIT_TOPIC, LEVEL_CHANGED_TOPIC])
    [topic] = fresh_topics(settings, "backlog")
    group = f"g-{tenant}"
    before = record(Component.COMPLETION, event_data(tenant, "s1", 0.5), topic=topic)
    up = record(Component.QUIZ, event_data(tenant, "s1", 1.0), event_id=f"{tenant}-up", topic=topic)
    bad = record(
        Component.QUIZ, event_data(tenant, "s1", 1.5), event_id=f"{tenant}-bad", topic=topic
    )
    produce(settings, [before, up, bad])
    [partition] = {m.partition() for m in read_to_end(settings, topic)}  # one student: one
    handled = Consumer(consumer_config(settings, group))
    handled.commit(offsets=[TopicPartition(topic, partition, 1)], asynchronous=False)
    handled.close()
    res = build(settings, source="test")
    try:
        await rebuild(res, [topic], group=group, batch_size=1)
    finally:
        await res.aclose()

    assert await redis.hget(keys.state(tenant, "s1"), "version") == b"2"
    announced = [
        orjson.loads(m.value() or b"{}").get("cause_event_id")
        for m in level_changes(settings, tenant)
    ]
    dead = [headers_of(m)["ce_id"] for m in read_to_end(settings, dlq_topic(topic), timeout=10)]
    assert (announced, dead) == ([f"{tenant}-up"], [f"{tenant}-bad"])

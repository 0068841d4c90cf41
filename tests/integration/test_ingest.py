"""The ingest path with real Redis and Tansu: poison messages go to the DLQ, nothing else moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
from redis.asyncio import Redis

from mastery.bootstrap import build
from mastery.domain import Component, Observation
from mastery.domain.days import DAY_MAX
from mastery.events.codec import JSON
from mastery.offsets import OffsetBook
from mastery.ports import Record
from mastery.store import Outcome, keys
from mastery.topics import dlq_topic
from tests.helpers import event_data, fresh_topics, headers_of, read_topic, record

if TYPE_CHECKING:
    from mastery.settings import Settings


async def test_poison_messages_are_dead_lettered_with_reasons(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    [topic] = fresh_topics(settings, "ingest")
    good = record(Component.QUIZ, event_data(tenant, "s1", 0.8), event_id="good-1", topic=topic)
    base = dict(good.headers)
    poison = [
        Record(topic, b"{not json", None, {**base, "ce_id": b"p1", "content-type": JSON.encode()}),
        Record(topic, b"\x02\x03", None, {**base, "ce_id": b"p2"}),  # truncated Avro
        record(Component.QUIZ, event_data(tenant, "s1", 1.5), event_id="p3", topic=topic),
        record(
            Component.QUIZ,
            {k: v for k, v in event_data(tenant, "s1").items() if k != "score"},
            event_id="p4",
            topic=topic,
            content_type=JSON,
        ),
        Record(topic, good.value, None, {**base, "ce_id": b"p5", "ce_type": b"mastery.bogus.v1"}),
        record(
            Component.QUIZ,
            event_data(tenant, "s1", at=datetime.now(UTC) + timedelta(days=1)),
            event_id="p6",
            topic=topic,
        ),
        good,  # redelivered
    ]
    res = build(settings, source="test")
    try:
        results = await res.ingestor.ingest([poison[0], good, *poison[1:]])
    finally:
        await res.aclose()

    outcomes = [o for o, _ in results]
    assert outcomes == [
        Outcome.REJECTED,
        Outcome.APPLIED,
        *[Outcome.REJECTED] * 5,
        Outcome.DUPLICATE,
    ]
    reasons = [r for _, r in results]
    assert "malformed JSON" in reasons[0]
    assert "malformed Avro" in reasons[2]
    assert "score" in reasons[3]
    assert "score" in reasons[4]
    assert "unknown event type" in reasons[5]
    assert "future" in reasons[6]

    dead = read_topic(settings, dlq_topic(topic), expected=6)
    by_id = {headers_of(m)["ce_id"]: headers_of(m) for m in dead}
    assert sorted(by_id) == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert "malformed JSON" in by_id["p1"]["dlq_reason"]
    assert by_id["p3"]["dlq_topic"] == topic
    assert next(m for m in dead if headers_of(m)["ce_id"] == "p2").value() == b"\x02\x03"

    state = await res.store.load(tenant, "s1")
    assert state is not None
    assert state.version == 1

    audit = await redis.xrange(keys.audit(tenant))
    assert [f[b"outcome"] for _, f in audit].count(b"applied") == 1
    assert [f[b"outcome"] for _, f in audit].count(b"duplicate") == 1
    rejected = [f for _, f in audit if f[b"outcome"] == b"rejected"]
    assert {orjson.loads(f[b"event"])["event_id"] for f in rejected} == {"p3", "p4", "p6"}


async def test_an_event_past_a_full_day_record_is_dead_lettered_not_wrapped(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """A day record counts a component's events in 16 bits: the 65,536th of one student,
    component and day is refused with the reason (audit and DLQ), not wrapped to 0, both
    when that day is the newest record and when it is an older one (a backfill)."""
    [topic] = fresh_topics(settings, "dayfull")
    day = datetime.now(UTC) - timedelta(days=2, hours=1)
    full = DAY_MAX - 1  # the batch below brings it to the limit and then past it
    res = build(settings, source="test")
    try:
        prefill = [
            Observation(f"pre-{i}", tenant, "s1", Component.QUIZ, 0.5, day) for i in range(full)
        ]
        for i in range(0, full, 5000):
            chunk = prefill[i : i + 5000]
            await res.store.apply([(o, b"{}") for o in chunk], [], datetime.now(UTC))

        def quiz(event_id: str, at: datetime = day) -> Record:
            return record(
                Component.QUIZ, event_data(tenant, "s1", 0.9, at=at), event_id=event_id, topic=topic
            )

        newest = await res.ingestor.ingest([quiz("last"), quiz("over"), quiz("pre-7")])
        later = await res.ingestor.ingest([quiz("today", datetime.now(UTC) - timedelta(hours=1))])
        backfill = await res.ingestor.ingest([quiz("late")])  # the full day is an older one now
        days = await res.store.days_of(tenant, "s1")
    finally:
        await res.aclose()

    reason = (
        f"the student already has {DAY_MAX} quiz events on this day: a day record holds no more"
    )
    assert newest == [
        (Outcome.APPLIED, None),
        (Outcome.REJECTED, reason),
        (Outcome.DUPLICATE, None),
    ]
    assert later == [(Outcome.APPLIED, None)]
    assert backfill == [(Outcome.REJECTED, reason)]

    dead = read_topic(settings, dlq_topic(topic), expected=2)
    assert sorted(headers_of(m)["ce_id"] for m in dead) == ["late", "over"]
    assert {headers_of(m)["dlq_reason"] for m in dead} == {reason}
    audit = await redis.xrange(keys.audit(tenant), "-", "+")
    refused = [f for _, f in audit if f[b"outcome"] == b"rejected"]
    assert [(orjson.loads(f[b"event"])["event_id"], f[b"reason"].decode()) for f in refused] == [
        ("over", reason),
        ("late", reason),
    ]
    assert days is not None
    counts = [d.events[Component.QUIZ].count for d in days.activity]
    assert counts == [DAY_MAX, 1]
    assert days.activity[0].events[Component.QUIZ].units == full * 5000 + 9000
    assert days.version == DAY_MAX + 1


async def test_a_batch_retried_after_its_apply_landed_still_dead_letters_its_refusals(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """The first attempt applied the batch and recorded its offsets, but its reply was
    lost (or the broker refused its dead letters): the retry meets offsets equal to its
    own end. It goes on (every event a duplicate) and dead-letters what the store refused
    again, instead of seeking past the batch and losing those dead letters."""
    [topic] = fresh_topics(settings, "retried")
    day = datetime.now(UTC) - timedelta(days=1)
    res = build(settings, source="test")
    try:
        prefill = [
            Observation(f"pre-{i}", tenant, "s1", Component.QUIZ, 0.5, day) for i in range(DAY_MAX)
        ]
        for i in range(0, DAY_MAX, 5000):
            chunk = [(o, b"{}") for o in prefill[i : i + 5000]]
            await res.store.apply(chunk, [], datetime.now(UTC))
        records = [
            record(Component.QUIZ, event_data(tenant, s, 0.9, at=day), event_id=e, topic=topic)
            for s, e in (("s1", "over"), ("s2", "fresh"))
        ]
        ends = {f"{topic}:0": 2}
        batch = res.ingestor.prepare(records)
        group = f"g-{tenant}"
        await res.store.apply(batch.accepted, batch.unapplied, batch.now, (OffsetBook(group), ends))
        retried = await res.ingestor.ingest(records, (OffsetBook(group), ends))
    finally:
        await res.aclose()

    reason = (
        f"the student already has {DAY_MAX} quiz events on this day: a day record holds no more"
    )
    assert retried == [(Outcome.REJECTED, reason), (Outcome.DUPLICATE, None)]
    dead = read_topic(settings, dlq_topic(topic), expected=1)
    assert [headers_of(m)["ce_id"] for m in dead] == ["over"]
    assert await redis.hget(keys.offsets(tenant, group), f"{topic}:0") == b"2"

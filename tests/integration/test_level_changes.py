"""Level-change notifications: one per change, published from the outbox, never twice."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import fastavro
import orjson
import pytest

from mastery.bootstrap import build
from mastery.domain import Component, Level, explain
from mastery.errors import Unavailable
from mastery.events import ingest as ingest_module
from mastery.events.kafka import create_topics
from mastery.events.notifications import LEVEL_CHANGED_SOURCE, LEVEL_CHANGED_TYPE
from mastery.events.schemas import schema_dir
from mastery.store import keys
from mastery.store.event_writes import LEFTOVER_MS
from mastery.topics import LEVEL_CHANGED_TOPIC
from mastery.web.events import event_handler
from tests.helpers import binary_ce, event_data, headers_of, level_changes, record
from tests.integration.conftest import serve

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from redis.asyncio import Redis

    from mastery.ports import OutMessage, Publisher, Record
    from mastery.settings import Settings

#: How old a note must be for another batch to publish it as a cut-off publish's leftover
#: (by Redis's clock), with a margin.
_LEFT_OVER_S = LEFTOVER_MS / 1000 + 0.2

LEVEL_SCHEMA = fastavro.parse_schema(
    orjson.loads((schema_dir() / "level-changed.avsc").read_bytes())
)


def _walk(tenant: str, seed: int, students: int, steps: int) -> list[list[Record]]:
    """Batches of events that move students up and down across level boundaries."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    batches = []
    for step in range(steps):
        batch = []
        for s in rng.sample(range(students), k=max(1, students // 2)):
            score = rng.choice((0.0, 0.35, 0.6, 0.75, 0.9, 1.0))
            at = now - timedelta(minutes=steps - step, seconds=s)
            batch.append(
                record(rng.choice(list(Component)), event_data(tenant, f"s{s}", score, at))
            )
        batches.append(batch)
    return batches


async def test_every_level_change_is_announced_once_with_the_domain_levels(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")
    levels: dict[str, Level] = {}
    expected: list[tuple[str, str, str, float]] = []
    batches = _walk(tenant, seed=11, students=12, steps=25)
    for batch in batches:
        await res.ingestor.ingest(batch)
        for s in {r.key.decode() for r in batch if r.key}:
            state = await res.store.load(tenant, s)
            assert state is not None
            report = explain(state, res.model)
            if s in levels and levels[s] is not report.level:
                expected.append((s, levels[s].value, report.level.value, report.mastery))
            levels[s] = report.level
    for batch in batches:  # a replay of everything: duplicates change nothing
        await res.ingestor.ingest(batch)
    await res.aclose()

    messages = level_changes(settings, tenant)
    got = [orjson.loads(m.value() or b"") for m in messages]
    assert len(expected) > 5, "the walk should cross levels"
    assert sorted(
        (d["student_id"], d["old_level"], d["new_level"], d["mastery"]) for d in got
    ) == sorted(expected)
    ids = [headers_of(m)["ce_id"] for m in messages]
    assert len(set(ids)) == len(ids)
    for m, doc in zip(messages, got, strict=True):
        headers = headers_of(m)
        assert headers["ce_type"] == LEVEL_CHANGED_TYPE
        changed_at = int(datetime.fromisoformat(doc["changed_at"]).timestamp() * 1000)
        assert headers["ce_id"] == f"{tenant}:{doc['student_id']}:{doc['version']}:{changed_at}"
        assert headers["ce_source"] == LEVEL_CHANGED_SOURCE  # whichever function published it
        assert m.key() == doc["student_id"].encode()
        fastavro.validate(doc, LEVEL_SCHEMA, raise_errors=True)


async def test_a_change_after_an_erasure_has_an_id_of_its_own(
    settings: Settings, tenant: str
) -> None:
    """An erasure starts the student's version again at 1: the same version reached
    again is another change, which a consumer deduplicating by id must not drop."""
    res = build(settings, source="test")

    async def a_life() -> None:  # beginner, then up: one change, at version 5
        await res.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s1", 0.1))])
        await res.ingestor.ingest([record(c, event_data(tenant, "s1", 1.0)) for c in Component])

    await a_life()
    await res.store.erase(tenant, "s1", datetime.now(UTC) - timedelta(milliseconds=1))
    await a_life()  # new events (new ids), after the erasure
    await res.aclose()
    messages = level_changes(settings, tenant)
    docs = [orjson.loads(m.value() or b"") for m in messages]
    assert len(docs) == 2, docs
    assert docs[0]["version"] == docs[1]["version"]  # the same version, in two lives
    assert len({headers_of(m)["ce_id"] for m in messages}) == 2


async def test_an_erasure_drops_the_students_changes_not_yet_published(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """A change recorded while the broker was out of reach waits in the outbox; erased,
    the student must not be announced by the tenant's next batch."""
    good = build(settings, source="test")
    no_broker = build(
        settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
        ),
        source="test",
    )
    low = [record(Component.QUIZ, event_data(tenant, s, 0.1)) for s in ("s1", "s2")]
    await good.ingestor.ingest(low)
    high = [record(c, event_data(tenant, s, 1.0)) for c in Component for s in ("s1", "s2")]
    with pytest.raises(Unavailable):
        await no_broker.ingestor.ingest(high)
    await no_broker.aclose()
    assert await redis.xlen(keys.outbox(tenant)) == 2  # one change each, not yet published
    [pending] = await good.store.pending_changes(tenant, "s1")  # what an export shows
    assert orjson.loads(pending)["student_id"] == "s1"

    await good.store.erase(tenant, "s1", datetime.now(UTC))
    assert await redis.xlen(keys.outbox(tenant)) == 1  # s2's stays
    assert await good.store.pending_changes(tenant, "s1") == []
    await asyncio.sleep(_LEFT_OVER_S)
    await good.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s3", 0.5))])
    await good.aclose()
    assert [
        orjson.loads(m.value() or b"")["student_id"] for m in level_changes(settings, tenant)
    ] == ["s2"]


async def test_a_publish_cut_off_is_completed_from_the_outbox(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    low = record(Component.QUIZ, event_data(tenant, "s1", 0.1))
    high = [record(c, event_data(tenant, "s1", 1.0)) for c in Component]
    good = build(settings, source="test")
    await good.ingestor.ingest([low])

    no_broker = build(
        settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
        ),
        source="test",
    )
    with pytest.raises(Unavailable):
        await no_broker.ingestor.ingest(high)
    await no_broker.aclose()
    assert await redis.xlen(keys.outbox(tenant)) >= 1  # applied, recorded, not yet published

    await asyncio.sleep(_LEFT_OVER_S)
    outcomes = await good.ingestor.ingest(high)  # the redelivery: duplicates, yet...
    assert {o.value for o, _ in outcomes} == {"duplicate"}
    state = await good.store.load(tenant, "s1")
    await good.aclose()
    assert state is not None
    changes = [orjson.loads(m.value() or b"") for m in level_changes(settings, tenant)]
    assert [(d["old_level"], d["new_level"]) for d in changes] == [
        ("beginner", explain(state).level.value)
    ]
    assert await redis.xlen(keys.outbox(tenant)) == 0  # ...published and dropped


async def test_an_event_handler_sweeps_a_quiet_tenants_leftover_level_change_when_due(
    settings: Settings, redis: Redis, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery's publish is cut off (the broker away: 503), its redelivery comes at
    once and is a duplicate (the note, fresh, is not a leftover yet), and the tenant sends
    nothing more: no next batch of theirs publishes the change. The handler sweeps the
    outboxes of the tenants delivered to it, within a delivery of another tenant's, once
    a sweep is due (every minute: an hour, then a second, here)."""
    monkeypatch.setattr(ingest_module, "_SWEEP_EVERY_S", 3600.0)
    create_topics(settings, [LEVEL_CHANGED_TOPIC])
    quiet, busy = tenant, f"{tenant}-busy"
    on_quiz = {"POST /": event_handler(Component.QUIZ)}
    res = build(settings, source="test")
    away = build(
        settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
        ),
        source="test",
    )
    others = [c for c in Component if c is not Component.QUIZ]
    await res.ingestor.ingest([record(c, event_data(quiet, "s1", 1.0)) for c in others])
    up, up_headers = binary_ce(Component.QUIZ, event_data(quiet, "s1", 1.0), f"{quiet}-up")
    try:
        async with (
            serve("on-quiz", on_quiz, res, uses_auth=False) as handler,
            serve("on-quiz", on_quiz, away, uses_auth=False) as cut_off,
        ):

            async def deliver(body: bytes, headers: dict[str, str]) -> object:
                resp = await handler.post("/", content=body, headers=headers)
                assert resp.status_code == 200, resp.text
                return resp.json()["outcome"]

            async def busy_event() -> object:
                data = event_data(busy, "s1")
                return await deliver(*binary_ce(Component.QUIZ, data, uuid.uuid4().hex))

            assert (await cut_off.post("/", content=up, headers=up_headers)).status_code == 503
            assert await deliver(up, up_headers) == "duplicate"  # redelivered at once
            assert await redis.xlen(keys.outbox(quiet)) == 1

            await asyncio.sleep(_LEFT_OVER_S)  # a leftover now
            assert await busy_event() == "applied"
            assert await redis.xlen(keys.outbox(quiet)) == 1  # no sweep due: it waits

            monkeypatch.setattr(ingest_module, "_SWEEP_EVERY_S", 1.0)  # passed long ago
            assert await busy_event() == "applied"
            assert await redis.xlen(keys.outbox(quiet)) == 0
    finally:
        await res.aclose()
        await away.aclose()
    changes = [orjson.loads(m.value() or b"") for m in level_changes(settings, quiet)]
    assert [(d["old_level"], d["new_level"], d["cause_event_id"]) for d in changes] == [
        ("competent", "expert", f"{quiet}-up")
    ]


class _LetsInFirst:
    """The real publisher, letting another pod's whole ingest run just before this one's
    first non-empty publish: two pods applying events of one tenant at once."""

    def __init__(self, inner: Publisher, other: Callable[[], Awaitable[object]]) -> None:
        self._inner = inner
        self._other: Callable[[], Awaitable[object]] | None = other

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if messages and self._other is not None:
            other, self._other = self._other, None
            await other()
        await self._inner.publish(messages)

    def close(self) -> None:
        self._inner.close()  # type: ignore[attr-defined]


async def test_two_pods_applying_one_tenant_announce_each_level_change_once(
    settings: Settings, tenant: str
) -> None:
    """Pod A's batch records a level change in the tenant's outbox; before A publishes it,
    pod B applies another student's change of the same tenant. B took A's fresh note for
    a leftover of a cut-off publish and published it too (one change, two notifications):
    only a note older than a publish takes is a leftover now (found by a durability
    reviewer)."""
    create_topics(settings, [LEVEL_CHANGED_TOPIC])
    a, b = build(settings, source="test"), build(settings, source="test")
    try:
        for s in ("sa", "sb"):  # each placed first at a low level
            await a.ingestor.ingest([record(Component.COMPLETION, event_data(tenant, s, 0.5))])
        up_b = record(Component.QUIZ, event_data(tenant, "sb", 1.0), event_id=f"{tenant}-b")
        a.publisher = _LetsInFirst(a.publisher, lambda: b.ingestor.ingest([up_b]))  # type: ignore[assignment]
        del a.__dict__["ingestor"]  # built again with the publisher above
        up_a = record(Component.QUIZ, event_data(tenant, "sa", 1.0), event_id=f"{tenant}-a")
        await a.ingestor.ingest([up_a])
    finally:
        await a.aclose()
        await b.aclose()

    causes = sorted(
        orjson.loads(m.value() or b"{}")["cause_event_id"] for m in level_changes(settings, tenant)
    )
    assert causes == [f"{tenant}-a", f"{tenant}-b"]

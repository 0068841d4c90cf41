"""``gdpr-export`` and ``gdpr-erase`` as deployed, against real Redis and Tansu."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson

from mastery.bootstrap import build
from mastery.cli.rebuild import erasures
from mastery.domain import Component
from mastery.domain.batch import Priority
from mastery.policy import Role
from mastery.ports import BatchRecord, Record
from mastery.store import Outcome, RedisStore, keys
from mastery.store.batches import BatchStore
from mastery.topics import XAPI_TOPIC
from mastery.web.gdpr import erase_student
from tests.helpers import event_data, keys_of_student, record, xapi_statement, xapi_voiding
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from redis.asyncio import Redis

    from mastery.bootstrap import Resources
    from mastery.settings import Settings


async def _ingest(settings: Settings, records: list[Record]) -> list[Outcome]:
    res = build(settings, source="test")
    try:
        return [outcome for outcome, _ in await res.ingestor.ingest(records)]
    finally:
        await res.aclose()


def _history(tenant: str, student: str, n: int = 4) -> list[Record]:
    components = list(Component)
    return [
        record(components[i % 4], event_data(tenant, student, 0.2 * (i % 5), class_id="c1"))
        for i in range(n)
    ]


async def test_export_holds_state_history_and_event_audit(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    await _ingest(settings, _history(tenant, "s1") + _history(tenant, "s2"))
    export = client("gdpr-export")

    resp = await export.post(
        "/gdpr/export", json={"student_id": "s1"}, headers=token("s1", "student", tenant)
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert (doc["student_id"], doc["tenant"], doc["classes"]) == ("s1", tenant, ["c1"])
    assert doc["mastery"]["version"] == 4
    assert set(doc["aggregates"]["components"]) == {c.value for c in Component}
    assert len(doc["history"]) == 1  # one active day
    assert [e["outcome"] for e in doc["events"]] == ["applied"] * 4
    assert {e["event"]["student_id"] for e in doc["events"]} == {"s1"}  # nobody else's

    admin = await export.post(
        "/gdpr/export", json={"student_id": "s1"}, headers=token("a", "admin", tenant)
    )
    assert admin.json()["events"] == doc["events"]
    for who in (token("s2", "student", tenant), token("t", "teacher", tenant, classes=["c1"])):
        resp = await export.post("/gdpr/export", json={"student_id": "s1"}, headers=who)
        assert resp.status_code == 403
    resp = await export.post(
        "/gdpr/export", json={"student_id": "nobody"}, headers=token("a", "admin", tenant)
    )
    assert resp.status_code == 404
    resp = await export.post(
        "/gdpr/export", json={"student_id": "s1"}, headers=token("a", "admin", "elsewhere")
    )
    assert resp.status_code == 404  # another tenant's admin: nothing, not "forbidden"


def _digest(event_id: str) -> str:
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


async def test_export_holds_what_is_kept_to_count_each_event_once_and_batch_results(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, redis: Redis, tenant: str
) -> None:
    """Beyond state, history and audit: each xAPI statement's record (what it added, or
    that it was voided), the hash of every event id seen, and results of batch runs."""
    home = f"https://{tenant}.lms.example"
    at = datetime.now(UTC) - timedelta(days=1)
    kept = xapi_statement("s1", "scored", scaled=0.6, home_page=home, at=at)
    voided = xapi_statement("s1", "scored", scaled=0.2, home_page=home, at=at)
    voiding = xapi_voiding("s1", str(voided["id"]), home_page=home)
    mapped = settings.model_copy(update={"xapi_tenants": {home: tenant}})
    statements = [
        Record(XAPI_TOPIC, orjson.dumps(s), b"k", {"content-type": b"application/json"})
        for s in (kept, voided, voiding)
    ]
    plain = [
        record(Component.QUIZ, event_data(tenant, "s1", 0.5, class_id="c1"), event_id=f"plain-{i}")
        for i in range(2)
    ]
    assert await _ingest(mapped, statements) == [Outcome.APPLIED] * 2 + [Outcome.VOIDING]
    await _ingest(settings, plain)
    batches = BatchStore(RedisStore(redis))
    now_ms = int(time.time() * 1000)
    await batches.create(
        BatchRecord(
            "b1", tenant, Priority.NORMAL, ("s1",), "a", Role.ADMIN, frozenset(), now_ms, now_ms
        )
    )
    await batches.save_results(tenant, "b1", {"s1": b'{"mastery": 0.5}'})

    resp = await client("gdpr-export").post(
        "/gdpr/export", json={"student_id": "s1"}, headers=token("s1", "student", tenant)
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert sorted(doc["xapi_statements"], key=lambda r: r["voided"]) == [
        {
            "statement_hash": _digest(str(kept["id"])),
            "date": at.date().isoformat(),
            "voided": False,
            "component": "quiz",
            "score": 0.6,
            "area": None,
        },
        {
            "statement_hash": _digest(str(voided["id"])),
            "date": at.date().isoformat(),
            "voided": True,
            "component": None,
            "score": None,
            "area": None,
        },
    ]
    ids = [str(s["id"]) for s in (kept, voided, voiding)] + ["plain-0", "plain-1"]
    assert doc["event_id_hashes"] == sorted(map(_digest, ids))
    assert doc["batch_results"] == {"b1": {"mastery": 0.5}}
    assert doc["pending_level_changes"] == []  # none waiting: the broker took them


async def test_erasure_removes_everything_and_replays_bring_nothing_back(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, redis: Redis, tenant: str
) -> None:
    events = _history(tenant, "s1", n=6)
    await _ingest(settings, events + _history(tenant, "s2"))
    admin = token("a", "admin", tenant)
    erase, export = client("gdpr-erase"), client("gdpr-export")
    predicted = await client("prediction").post(
        "/predictions/next-week", json={"student_id": "s1"}, headers=admin
    )
    assert predicted.status_code == 200
    assert await redis.exists(keys.prediction(tenant, "s1"))  # a cached prediction, too
    history = await client("mastery-history").post(
        "/analytics/mastery-history", json={"student_id": "s1"}, headers=admin
    )
    assert history.status_code == 200
    assert await redis.exists(keys.history(tenant, "s1"))  # and a cached history
    batches = BatchStore(RedisStore(redis))
    now_ms = int(time.time() * 1000)
    await batches.create(
        BatchRecord(
            "b1",
            tenant,
            Priority.NORMAL,
            ("s1", "s2"),
            "a",
            Role.ADMIN,
            frozenset(),
            now_ms,
            now_ms + 60_000,
        )
    )
    await batches.save_results(tenant, "b1", {"s1": b"{}", "s2": b"{}"})  # a batch's results

    for who in (token("s1", "student", tenant), token("t", "teacher", tenant, classes=["c1"])):
        assert (
            await erase.post("/gdpr/erase", json={"student_id": "s1"}, headers=who)
        ).status_code == 403
    resp = await erase.post("/gdpr/erase", json={"student_id": "s1"}, headers=admin)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["keys_deleted"] >= 3
    assert doc["audit_entries_removed"] == 6
    assert doc["batch_results_removed"] == 1
    detail = "no mastery data for this student"
    stand_in = {"student_id": "s1", "error": "not_found", "detail": detail}
    assert await redis.hgetall(keys.batch_results(tenant, "b1")) == {  # not_found in its place
        b"s1": orjson.dumps(stand_in),
        b"s2": b"{}",
    }
    assert await keys_of_student(redis, tenant, "s1") == []
    assert await redis.zscore(keys.tenant_index(tenant, "mastery"), "s1") is None
    assert await redis.hkeys(keys.class_index(tenant, "c1")) == [b"s2"]

    assert await _ingest(settings, events) == [Outcome.ERASED] * 6  # a replay of the topic
    assert await keys_of_student(redis, tenant, "s1") == []
    after = (await export.post("/gdpr/export", json={"student_id": "s1"}, headers=admin)).json()
    assert (after["mastery"], after["batch_results"]) == (None, {})
    assert [e["outcome"] for e in after["events"]] == ["erased"] * 6  # the refusals, audited
    # by their ids, not what they said (the replay does not put the student's data back)
    assert {frozenset(e["event"]) for e in after["events"]} == {
        frozenset({"topic", "partition", "offset", "at", "event_id", "tenant", "student_id"})
    }

    again = await erase.post("/gdpr/erase", json={"student_id": "s1"}, headers=admin)
    assert again.status_code == 200
    assert (again.json()["keys_deleted"], again.json()["audit_entries_removed"]) == (0, 6)
    assert again.json()["batch_results_removed"] == 0
    unknown = await erase.post("/gdpr/erase", json={"student_id": "never"}, headers=admin)
    assert (unknown.status_code, unknown.json()["keys_deleted"]) == (200, 0)
    s2 = await export.post("/gdpr/export", json={"student_id": "s2"}, headers=admin)
    assert s2.json()["mastery"]["version"] == 4  # the classmate is untouched


async def test_an_erasure_the_audit_cannot_record_is_not_made(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """``mastery rebuild`` replays the erasures the access audit recorded: one made without
    its record would come back with the next rebuild. So the record goes first, and with
    the broker out of reach the erasure is a 503 that changed nothing."""
    await _ingest(settings, _history(tenant, "s1"))
    no_broker = build(
        settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
        )
    )
    async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, no_broker) as erase:
        resp = await erase.post(
            "/gdpr/erase", json={"student_id": "s1"}, headers=token("a", "admin", tenant)
        )
    await no_broker.aclose()
    assert resp.status_code == 503
    assert await keys_of_student(redis, tenant, "s1")  # nothing was erased

    up = build(settings)
    async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, up) as erase:
        resp = await erase.post(
            "/gdpr/erase", json={"student_id": "s1"}, headers=token("a", "admin", tenant)
        )
    await up.aclose()
    assert resp.status_code == 200
    erased = [e for e in await erasures(settings) if e.tenant == tenant]
    # Recorded before it ran (202, at the erasure's own time) and as answered (200).
    assert [e.student for e in erased] == ["s1", "s1"]
    assert erased[0].at == datetime.fromisoformat(resp.json()["erased_at"])


async def test_erasure_with_redis_down_is_503_and_a_retry_completes(
    settings: Settings, redis: Redis, redis_down: Resources, tenant: str
) -> None:
    await _ingest(settings, _history(tenant, "s1"))
    async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, redis_down) as erase:
        resp = await erase.post(
            "/gdpr/erase", json={"student_id": "s1"}, headers=token("a", "admin", tenant)
        )
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["content-type"] == "application/problem+json"
    assert await keys_of_student(redis, tenant, "s1")  # nothing was erased

    up = build(settings)
    async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, up) as erase:
        resp = await erase.post(
            "/gdpr/erase", json={"student_id": "s1"}, headers=token("a", "admin", tenant)
        )
    await up.aclose()
    assert resp.status_code == 200
    assert await keys_of_student(redis, tenant, "s1") == []


async def test_an_event_applied_after_an_erasure_keeps_its_audit_record(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """The erasure's audit walk runs after its atomic step: an event dated after the
    erasure, applied meanwhile (the student starts again), is the student's new data and
    keeps its audit record; the erased event's goes (found by a durability reviewer)."""
    res = build(settings, source="test")
    try:
        old = record(
            Component.QUIZ, event_data(tenant, "s1", 0.4, at=datetime.now(UTC) - timedelta(hours=1))
        )
        await res.ingestor.ingest([old])
        erased_at = datetime.now(UTC)
        await res.store.erase(tenant, "s1", erased_at)  # the erasure's atomic step
        new = record(Component.QUIZ, event_data(tenant, "s1", 0.9), event_id=f"{tenant}-new")
        assert [o for o, _ in await res.ingestor.ingest([new])] == [Outcome.APPLIED]
        entries = await res.store.audit_entries(tenant, "s1", erased_at=erased_at)  # its walk
        await res.store.redact_audit(tenant, [i for i, _ in entries])
        state = await res.store.load(tenant, "s1")
    finally:
        await res.aclose()

    assert state is not None
    assert state.version == 1
    audited = [f[b"event"] for _, f in await redis.xrange(keys.audit(tenant))]
    assert [orjson.loads(e)["event_id"] for e in audited] == [f"{tenant}-new"]


async def test_an_event_stamped_ahead_and_applied_before_an_erasure_is_erased_too(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, redis: Redis, tenant: str
) -> None:
    """An event may be stamped up to ``max_clock_skew`` ahead of the clock that applies it
    (a producer's clock running fast). One applied before the erasure is the erased
    student's data like any other: its audit record goes, and delivered again (Kafka
    delivers at least once) it is refused, not applied to a fresh record (found by a
    security reviewer)."""
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    stamped = record(Component.QUIZ, event_data(tenant, "s1", 0.9, at=ahead, class_id="c1"))
    assert await _ingest(settings, [stamped]) == [Outcome.APPLIED]
    admin = token("a", "admin", tenant)

    resp = await client("gdpr-erase").post("/gdpr/erase", json={"student_id": "s1"}, headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["audit_entries_removed"] == 1
    export = await client("gdpr-export").post(
        "/gdpr/export", json={"student_id": "s1"}, headers=admin
    )
    assert export.status_code == 404, export.text  # nothing of theirs is left
    # Sent again (as one cut off after its atomic step is completed): finds no state,
    # and still does not let the event through.
    again = await client("gdpr-erase").post("/gdpr/erase", json={"student_id": "s1"}, headers=admin)
    assert again.status_code == 200, again.text

    assert await _ingest(settings, [stamped]) == [Outcome.ERASED]  # delivered again
    assert await keys_of_student(redis, tenant, "s1") == []
    assert await redis.hkeys(keys.class_index(tenant, "c1")) == []

"""Every function's HTTP surface, in process over ASGI, against real Redis and Tansu."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import jwt
import orjson
import pytest

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.registry import FUNCTIONS
from mastery.settings import Settings
from mastery.store import keys
from mastery.topics import AUDIT_TOPIC, dlq_topic, event_topic
from mastery.web.events import event_handler
from mastery.web.query import query_mastery
from tests.conftest import JWT_SECRET
from tests.helpers import binary_ce, event_data, headers_of, read_to_end, read_topic, record
from tests.integration.conftest import JSON, serve, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from redis.asyncio import Redis

    from mastery.bootstrap import Resources


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
async def test_health_ready_metrics(
    client: Callable[[str], httpx.AsyncClient], spec: object
) -> None:
    c = client(spec.name)  # type: ignore[attr-defined]
    assert (await c.get("/health")).json()["status"] == "ok"
    ready = await c.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"
    # OpenFaaS's own paths (the Community Edition probes /_/health, reads no annotation).
    assert (await c.get("/_/health")).json()["status"] == "ok"
    assert (await c.get("/_/ready")).json() == ready.json()
    assert (await c.post("/nowhere")).status_code == 404
    metrics = (await c.get("/metrics")).text
    assert "mastery_requests_total" in metrics
    assert "mastery_request_duration_seconds_bucket" in metrics


async def test_event_handler_accepts_every_delivery_form(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    c = client("on-quiz")
    body, headers = binary_ce(Component.QUIZ, event_data(tenant, "s1", 0.9), "bin-1")
    first = await c.post("/", content=body, headers=headers)
    assert first.status_code == 200
    assert first.json() == {"outcome": "applied"}
    again = await c.post("/", content=body, headers=headers)
    assert again.json() == {"outcome": "duplicate"}

    structured = {
        "specversion": "1.0",
        "id": "str-1",
        "type": "mastery.quiz.v1",
        "source": "t",
        "datacontenttype": "application/json",
        "data": event_data(tenant, "s1", 0.7),
    }
    resp = await c.post(
        "/",
        content=orjson.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert resp.json() == {"outcome": "applied"}

    avro = record(Component.QUIZ, event_data(tenant, "s1", 0.5), event_id="conn-1")
    connector = {"x-topic": "mastery.quiz", "x-kafka-key": "s1"}
    connector |= {f"x-kafka-{k}": v.decode() for k, v in avro.headers.items()}
    resp = await c.post("/", content=avro.value, headers=connector)
    assert resp.json() == {"outcome": "applied"}

    q = await client("mastery-query").post(
        "/mastery/query", json={"student_id": "s1"}, headers=token("s1", "student", tenant)
    )
    assert q.json()["components"]["quiz"]["events"] == 3


async def test_event_handler_dead_letters_bad_events_and_answers_200(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    c = client("on-completion")
    body, headers = binary_ce(Component.COMPLETION, event_data(tenant, "s1", 2.0), f"bad-{tenant}")
    resp = await c.post("/", content=body, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["outcome"] == "rejected"
    assert "score" in resp.json()["reason"]

    wrong_type = {**headers, "ce-id": f"wt-{tenant}", "ce-type": "mastery.quiz.v1"}
    resp = await c.post("/", content=body, headers=wrong_type)
    assert "does not belong on topic mastery.completion" in resp.json()["reason"]

    # Other tests dead-letter records here too, some without any ce_id (fuzzing).
    dead = [
        headers_of(m) for m in read_to_end(settings, dlq_topic(event_topic(Component.COMPLETION)))
    ]
    mine = {h["ce_id"]: h for h in dead if tenant in h.get("ce_id", "")}
    assert set(mine) == {f"bad-{tenant}", f"wt-{tenant}"}
    assert "score" in mine[f"bad-{tenant}"]["dlq_reason"]


async def test_query_returns_the_contract(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    events = client("on-completion")
    body, headers = binary_ce(
        Component.COMPLETION, event_data(tenant, "s1", 0.8, class_id="c1"), "c-1"
    )
    await events.post("/", content=body, headers=headers)

    resp = await client("mastery-query").post(
        "/mastery/query", json={"student_id": "s1"}, headers=token("s1", "student", tenant)
    )
    assert resp.status_code == 200
    doc = resp.json()
    assert set(doc) >= {
        "student_id",
        "tenant",
        "mastery",
        "level",
        "components",
        "updated_at",
        "version",
    }
    assert doc["tenant"] == tenant
    assert doc["version"] == 1
    assert doc["mastery"] == pytest.approx(0.32)
    assert doc["level"] == "beginner"
    assert doc["components"]["completion"] == {
        "score": 0.8,
        "weight": 0.4,
        "contribution": 0.32,
        "events": 1,
        "observed": True,
    }
    assert doc["components"]["quiz"]["observed"] is False
    assert resp.headers["x-correlation-id"]


async def test_query_enforces_roles_and_tenants(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    events = client("on-quiz")
    for student, cls in (("s1", "c1"), ("s2", "c2")):
        body, headers = binary_ce(
            Component.QUIZ, event_data(tenant, student, class_id=cls), f"{student}-e"
        )
        await events.post("/", content=body, headers=headers)
    q = client("mastery-query")

    async def status(headers: dict[str, str], student: str = "s1") -> int:
        resp = await q.post("/mastery/query", json={"student_id": student}, headers=headers)
        if resp.status_code >= 400:
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["status"] == resp.status_code
        return resp.status_code

    assert await status(token("s1", "student", tenant)) == 200
    assert await status(token("s2", "student", tenant)) == 403
    assert await status(token("t1", "teacher", tenant, classes=["c1"])) == 200
    assert await status(token("t1", "teacher", tenant, classes=["c2"])) == 403
    assert await status(token("t1", "teacher", tenant)) == 403
    assert await status(token("a1", "admin", tenant)) == 200
    assert await status(token("a1", "admin", tenant), "nobody") == 404
    assert await status(token("a1", "admin", "other-school")) == 404  # other tenants see nothing
    assert await status(JSON) == 401
    assert await status({"authorization": "Bearer nope", **JSON}) == 401
    expired = {"sub": "s1", "role": "student", "tenant": tenant, "exp": int(time.time()) - 3600}
    bad = {"authorization": f"Bearer {jwt.encode(expired, JWT_SECRET, algorithm='HS256')}", **JSON}
    assert await status(bad) == 401
    wrong_key = {"sub": "s1", "role": "student", "tenant": tenant, "exp": int(time.time()) + 60}
    forged = {
        "authorization": f"Bearer {jwt.encode(wrong_key, 'x' * 32, algorithm='HS256')}",
        **JSON,
    }
    assert await status(forged) == 401


async def test_a_teacher_no_longer_sees_a_student_who_moved_class(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    """A student's events carried c1 until 45 days ago and c2 since: after 30 days of c2
    (``MASTERY_CLASS_LAPSE_DAYS``) c1's teacher is refused, c2's is not."""
    events = client("on-quiz")
    now = datetime.now(UTC)
    for i, (cls, ago) in enumerate((("c1", 45), ("c2", 40), ("c2", 1))):
        data = event_data(tenant, "s1", at=now - timedelta(days=ago), class_id=cls)
        body, headers = binary_ce(Component.QUIZ, data, f"moved-{i}")
        assert (await events.post("/", content=body, headers=headers)).status_code < 300
    q = client("mastery-query")

    async def status(classes: list[str]) -> int:
        headers = token("t1", "teacher", tenant, classes=classes)
        return (
            await q.post("/mastery/query", json={"student_id": "s1"}, headers=headers)
        ).status_code

    assert await status(["c1"]) == 403
    assert await status(["c2"]) == 200


async def test_query_rejects_bad_bodies_with_the_field_named(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    q = client("mastery-query")
    headers = token("a1", "admin", tenant)
    cases = [
        (b'{"student_id": "s{1}"}', 422, "student_id"),
        (b'{"student": "s1"}', 422, "student_id"),
        (b'{"student_id": 5}', 422, "student_id"),
        (b"[]", 422, "body"),
        (b'{"student_id"', 400, "JSON"),
        (b"x" * 70_000, 413, "larger"),
    ]
    for body, status, needle in cases:
        resp = await q.post("/mastery/query", content=body, headers=headers)
        assert resp.status_code == status, body[:40]
        assert needle in resp.text
        assert resp.headers["content-type"] == "application/problem+json"
    resp = await q.post(
        "/mastery/query",
        content=b'{"student_id":"s1"}',
        headers={**headers, "content-type": "text/plain"},
    )
    assert resp.status_code == 415
    resp = await q.post(  # media types are case-insensitive (RFC 9110 8.3.1)
        "/mastery/query",
        content=b'{"student_id":"s1"}',
        headers={**headers, "content-type": "Application/JSON; charset=UTF-8"},
    )
    assert resp.status_code != 415, resp.text
    assert (await q.get("/mastery/query", headers=headers)).status_code == 405
    assert (await q.post("/elsewhere", headers=headers)).status_code == 404


async def test_redis_down_is_503_with_retry_after(redis_down: Resources, tenant: str) -> None:
    async with serve("mastery-query", {"POST /mastery/query": query_mastery}, redis_down) as query:
        resp = await query.post(
            "/mastery/query", json={"student_id": "s1"}, headers=token("s1", "student", tenant)
        )
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    body, headers = binary_ce(Component.QUIZ, event_data(tenant, "s1"), str(uuid.uuid4()))
    async with serve(
        "on-quiz", {"POST /": event_handler(Component.QUIZ)}, redis_down, uses_auth=False
    ) as events:
        resp = await events.post("/", content=body, headers=headers)
    assert resp.status_code == 503  # the trigger retries; nothing is acknowledged
    assert resp.headers["content-type"] == "application/problem+json"


async def test_oversized_bodies_are_refused_without_reading_them_whole(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    async def chunks(kib: int) -> AsyncIterator[bytes]:  # no Content-Length: still held
        for _ in range(kib):
            yield b"x" * 1024

    admin = token("a1", "admin", tenant)
    # A delivery's limit is Kafka's message size (1 MiB), a request's 64 KiB.
    for name, path, kib in (("on-quiz", "/", 1100), ("mastery-query", "/mastery/query", 100)):
        resp = await client(name).post(path, content=chunks(kib), headers=admin)
        assert resp.status_code == 413, name
        assert resp.headers["content-type"] == "application/problem+json"


async def test_every_data_access_is_audited_on_the_audit_topic(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    events = client("on-quiz")
    body, headers = binary_ce(
        Component.QUIZ, event_data(tenant, "s1", class_id="c1"), f"{tenant}-a"
    )
    await events.post("/", content=body, headers=headers)
    q = client("mastery-query")
    asks = {
        f"{tenant}-ok": token("s1", "student", tenant),
        f"{tenant}-denied": token("s2", "student", tenant),
        f"{tenant}-anon": {},
    }
    for cid, auth in asks.items():
        await q.post(
            "/mastery/query", json={"student_id": "s1"}, headers={**auth, "x-correlation-id": cid}
        )

    seen = read_topic(settings, AUDIT_TOPIC, expected=100_000, timeout=3)
    mine = {}
    for m in seen:
        doc = orjson.loads(m.value())
        if doc.get("correlation_id") in asks:
            mine[doc["correlation_id"]] = (doc, m.key())
    ok, ok_key = mine[f"{tenant}-ok"]
    assert ok_key == tenant.encode()
    assert (ok["outcome"], ok["subject"], ok["role"], ok["tenant"], ok["students"]) == (
        "allowed",
        "s1",
        "student",
        tenant,
        ["s1"],
    )
    assert ok["function"] == "mastery-query"
    assert mine[f"{tenant}-denied"][0]["outcome"] == "denied"
    assert mine[f"{tenant}-anon"][0]["outcome"] == "unauthenticated"
    assert mine[f"{tenant}-anon"][0]["subject"] is None


async def test_without_the_audit_broker_no_data_is_served(settings: Settings, tenant: str) -> None:
    no_broker = settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
    )
    res = build(no_broker)
    async with serve("mastery-query", {"POST /mastery/query": query_mastery}, res) as query:
        resp = await query.post(
            "/mastery/query", json={"student_id": "s1"}, headers=token("a1", "admin", tenant)
        )
    await res.aclose()
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert "audit" in resp.json()["detail"]


async def test_an_event_over_the_api_body_limit_is_audited_and_dead_lettered(
    client: Callable[[str], httpx.AsyncClient], redis: Redis, tenant: str
) -> None:
    """A delivery larger than the API's body limit (64 KiB) but one the broker took: the
    handler reads it (up to MASTERY_MAX_EVENT_BYTES) and the ingest path refuses it for
    what it says, audited, as ``mastery consume`` would. A 413 is not retried by
    KafkaSource: the record went nowhere (found by a durability reviewer)."""
    c = client("on-quiz")
    data = event_data(tenant, "s1", 1.5, note="x" * 70_000)  # its score is out of range
    body, headers = binary_ce(Component.QUIZ, data, f"big-{tenant}")
    resp = await c.post("/", content=body, headers=headers)
    audited = await redis.xrange(keys.audit(tenant))
    assert (resp.status_code, resp.json()["outcome"], len(audited)) == (200, "rejected", 1)

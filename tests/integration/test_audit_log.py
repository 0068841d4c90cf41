"""audit-log: an admin reads their tenant's recent audit records, against real Redis and Tansu.

Access records are made by really calling mastery-query; event outcomes by really
ingesting events. Each test has its own tenant, so the shared audit topic and Redis
hold other tests' records too, which must never show.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.errors import Unavailable
from mastery.events.access_log import KafkaAccessLog
from mastery.events.kafka import create_topics, producer_config, reader_config
from mastery.topics import AUDIT_TOPIC
from mastery.web.audit import recent_audit
from mastery.web.query import query_mastery
from tests.conftest import JWT_SECRET
from tests.helpers import event_data, fresh_topics, record
from tests.integration.conftest import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from mastery.bootstrap import Resources
    from mastery.settings import Settings

AUDIT = {"POST /audit/recent": recent_audit}
QUERY = {"POST /mastery/query": query_mastery}


def token(sub: str, role: str, tenant: str, **claims: object) -> dict[str, str]:
    body = {"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + 300, **claims}
    return {"authorization": f"Bearer {jwt.encode(body, JWT_SECRET, algorithm='HS256')}"}


@pytest.fixture
async def res(settings: Settings) -> AsyncIterator[Resources]:
    create_topics(settings)
    resources = build(settings, source="test")
    yield resources
    await resources.aclose()


async def _activity(res: Resources, tenant: str) -> list[str]:
    """Events for s1 and s2, a duplicate, then three queries; their correlation ids, in order."""
    await res.ingestor.ingest(
        [
            record(Component.QUIZ, event_data(tenant, "s1", class_id="c1"), event_id="e1"),
            record(Component.QUIZ, event_data(tenant, "s2", class_id="c2"), event_id="e2"),
        ]
    )
    await res.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s1"), event_id="e1")])
    asks = [
        (f"{tenant}-ok", token("s1", "student", tenant), "s1"),
        (f"{tenant}-denied", token("s2", "student", tenant), "s1"),
        (f"{tenant}-admin", token("a1", "admin", tenant), "s2"),
    ]
    async with serve("mastery-query", QUERY, res) as query:
        for cid, auth, student in asks:
            resp = await query.post(
                "/mastery/query",
                json={"student_id": student},
                headers={**auth, "x-correlation-id": cid},
            )
            assert resp.status_code in (200, 403)
    return [cid for cid, _, _ in asks]


async def _audit(client: httpx.AsyncClient, tenant: str, **body: Any) -> httpx.Response:
    return await client.post("/audit/recent", json=body, headers=token("a1", "admin", tenant))


async def test_an_admin_reads_access_records_and_event_outcomes_newest_first(
    res: Resources, tenant: str
) -> None:
    asked = await _activity(res, tenant)
    async with serve("audit-log", AUDIT, res) as audit:
        resp = await _audit(audit, tenant)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["tenant"] == tenant
    assert doc["complete"] is True
    records = doc["records"]

    access = [r for r in records if r["kind"] == "access"]
    assert [r["correlation_id"] for r in access] == asked[::-1]
    assert records[0]["correlation_id"] == asked[-1]
    ok, denied, admin = access[::-1]
    assert (ok["outcome"], ok["subject"], ok["role"], ok["students"]) == (
        "allowed",
        "s1",
        "student",
        ["s1"],
    )
    assert (denied["outcome"], denied["status"]) == ("denied", 403)
    assert admin["function"] == "mastery-query"
    assert {r["tenant"] for r in access} == {tenant}

    events = [r for r in records if r["kind"] == "event"]
    assert [(r["outcome"], r["event"]["event_id"]) for r in events] == [
        ("duplicate", "e1"),
        ("applied", "e2"),
        ("applied", "e1"),
    ]
    assert {r["event"]["tenant"] for r in events} == {tenant}
    assert len(records) == len(access) + len(events) == 6
    stamps = [datetime.fromisoformat(r["at"]) for r in events]
    assert stamps == sorted(stamps, reverse=True)


async def test_limit_kind_student_and_since_narrow_the_answer(res: Resources, tenant: str) -> None:
    asked = await _activity(res, tenant)
    async with serve("audit-log", AUDIT, res) as audit:
        newest = (await _audit(audit, tenant, limit=2)).json()["records"]
        access = (await _audit(audit, tenant, kind="access")).json()["records"]
        events = (await _audit(audit, tenant, kind="events", limit=1000)).json()["records"]
        s2 = (await _audit(audit, tenant, student_id="s2")).json()["records"]
        nobody = (await _audit(audit, tenant, student_id="s9")).json()["records"]
        # since is inclusive to the millisecond: start it after every record above, and
        # the second round after it
        since = datetime.now(UTC) + timedelta(milliseconds=1)
        while datetime.now(UTC) < since:
            await asyncio.sleep(0.001)
        later = await _activity(res, tenant)
        recent = (await _audit(audit, tenant, since=since.isoformat())).json()["records"]

    assert [r["correlation_id"] for r in newest] == [asked[2], asked[1]]
    # reading the audit is a data access too: the first read is on record by the second
    assert [(r["kind"], r["function"], r["correlation_id"]) for r in access[1:]] == [
        ("access", "mastery-query", cid) for cid in asked[::-1]
    ]
    assert (access[0]["function"], access[0]["subject"], access[0]["outcome"]) == (
        "audit-log",
        "a1",
        "allowed",
    )
    assert {r["kind"] for r in events} == {"event"}
    assert len(events) == 3
    assert nobody == []
    # s2: their one event, and the admin's query of them (the other queries name s1)
    assert [(r["kind"], r.get("correlation_id")) for r in s2] == [
        ("access", asked[2]),
        ("event", None),
    ]
    assert s2[1]["event"]["student_id"] == "s2"
    # since: the second round only (its events are duplicates now, its queries new)
    assert [r["correlation_id"] for r in recent if r["kind"] == "access"] == later[::-1]
    assert {r["outcome"] for r in recent if r["kind"] == "event"} == {"duplicate"}
    assert len(recent) == 6


def _tenant_of(doc: dict[str, Any]) -> str:
    return str(doc["tenant"] if doc["kind"] == "access" else doc["event"]["tenant"])


async def test_another_tenants_records_never_appear(res: Resources, tenant: str) -> None:
    other = f"t-other-{uuid.uuid4().hex[:12]}"
    theirs = await _activity(res, other)
    mine = await _activity(res, tenant)
    async with serve("audit-log", AUDIT, res) as audit:
        resp = await _audit(audit, tenant, limit=1000)
        # the same student ids exist in both tenants: a filter does not cross over either
        by_student = await _audit(audit, other, limit=1000, student_id="s1")
    records = resp.json()["records"]
    assert other not in resp.text
    assert {_tenant_of(r) for r in records} == {tenant}
    assert {r["correlation_id"] for r in records if r["kind"] == "access"} == set(mine)
    assert tenant not in by_student.text
    assert {_tenant_of(r) for r in by_student.json()["records"]} == {other}
    assert {r["correlation_id"] for r in by_student.json()["records"] if r["kind"] == "access"} == {
        theirs[0],
        theirs[1],
    }


async def test_students_and_teachers_are_refused_and_the_refusal_is_audited(
    res: Resources, tenant: str
) -> None:
    async with serve("audit-log", AUDIT, res) as audit:
        for role, claims in (("student", {}), ("teacher", {"classes": ["c1"]})):
            resp = await audit.post(
                "/audit/recent", json={}, headers=token("u1", role, tenant, **claims)
            )
            assert resp.status_code == 403, role
            assert resp.headers["content-type"] == "application/problem+json"
            assert "records" not in resp.json()
        assert (await audit.post("/audit/recent", json={})).status_code == 401
        seen = (await _audit(audit, tenant, kind="access")).json()["records"]
    # newest first; the anonymous request names no tenant, so it is no tenant's to read
    assert [(r["function"], r["role"], r["outcome"]) for r in seen] == [
        ("audit-log", "teacher", "denied"),
        ("audit-log", "student", "denied"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"kind": "secrets"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no offset: ambiguous
        ({"since": -8.2e-226}, "since"),  # a number is no RFC 3339 (pydantic: a Unix time)
        ({"since": "1764417600"}, "since"),
        ({"student_id": "s{1}"}, "student_id"),
        ({"tenant": "elsewhere"}, "tenant"),  # the tenant comes from the token only
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    res: Resources, tenant: str, body: dict[str, object], field: str
) -> None:
    async with serve("audit-log", AUDIT, res) as audit:
        resp = await audit.post("/audit/recent", json=body, headers=token("a1", "admin", tenant))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in resp.json()["errors"]] == [field]


async def test_an_empty_or_missing_topic_answers_at_once(
    res: Resources, tenant: str, settings: Settings
) -> None:
    [empty] = fresh_topics(settings, "audit-empty")
    for topic in (empty, f"audit-missing-{uuid.uuid4().hex[:8]}"):
        log = KafkaAccessLog(reader_config(settings), topic)
        scan = await log.recent(tenant, 100)
        log.close()
        assert (scan.entries, scan.complete) == ([], True)

    blank = build(settings)
    blank.access_log = KafkaAccessLog(reader_config(settings), empty)  # built on first use
    async with serve("audit-log", AUDIT, blank) as audit:
        resp = await _audit(audit, tenant)
    await blank.aclose()
    assert resp.status_code == 200
    assert resp.json() == {"tenant": tenant, "records": [], "complete": True}


async def test_a_sparse_tenant_is_found_behind_other_tenants_records(
    settings: Settings, tenant: str
) -> None:
    """Pages walk back past the noise; partitions merge by time; the budget is honoured."""
    [topic] = fresh_topics(settings, "audit-walk")
    # Batches of 100: the broker's high watermark then trails the last record of a
    # partition by up to 99 (see access_log), so the newest record is past it.
    producer = Producer({**producer_config(settings), "linger.ms": 20, "batch.num.messages": 100})
    now_ms = int(time.time() * 1000)

    def put(key: str, at_ms: int, partition: int, n: int = 0) -> None:
        doc = {"kind": "access", "tenant": key, "students": [f"s{n}"], "n": n}
        producer.produce(topic, orjson.dumps(doc), key.encode(), partition, timestamp=at_ms)

    # mine: 6 old records spread over the 3 partitions, 3,000 of another tenant's, 1 more
    for n in range(6):
        put(tenant, now_ms - 60_000 + n, n % 3, n)
    for i in range(3000):
        put("noisy", now_ms - 30_000 + i, i % 3)
    put(tenant, now_ms, 1, 6)
    assert producer.flush(15) == 0

    log = KafkaAccessLog(reader_config(settings), topic)
    found = await log.recent(tenant, 4)
    everything = await log.recent(tenant, 100)
    one = await log.recent(tenant, 10, student_id="s2")
    log.close()
    assert [e.record["n"] for e in found.entries] == [6, 5, 4, 3]
    assert found.complete
    assert [e.record["n"] for e in everything.entries] == [6, 5, 4, 3, 2, 1, 0]
    assert [e.record["n"] for e in one.entries] == [2]


async def test_the_scan_budget_bounds_a_read_and_says_so(settings: Settings, tenant: str) -> None:
    [topic] = fresh_topics(settings, "audit-budget")
    # One record a batch, so the broker's high watermarks are exact (see access_log).
    producer = Producer({**producer_config(settings), "batch.num.messages": 1})
    for p in range(3):
        producer.produce(topic, orjson.dumps({"tenant": tenant, "students": []}), tenant, p)
    for i in range(900):
        producer.produce(topic, orjson.dumps({"tenant": "noisy"}), b"noisy", i % 3)
    assert producer.flush(15) == 0

    stingy = KafkaAccessLog(reader_config(settings), topic, scan_max=300)
    partial = await stingy.recent(tenant, 4)
    stingy.close()
    assert (partial.entries, partial.complete) == ([], False)
    enough = KafkaAccessLog(reader_config(settings), topic, scan_max=1000)
    whole = await enough.recent(tenant, 4)
    enough.close()
    assert (len(whole.entries), whole.complete) == (3, True)


async def test_redis_down_is_503(redis_down: Resources, tenant: str) -> None:
    async with serve("audit-log", AUDIT, redis_down) as audit:
        resp = await _audit(audit, tenant)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["content-type"] == "application/problem+json"


async def test_an_unreachable_broker_is_unavailable(settings: Settings, tenant: str) -> None:
    down = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    log = KafkaAccessLog(reader_config(down), AUDIT_TOPIC, timeout_s=1)
    with pytest.raises(Unavailable):
        await log.recent(tenant, 10)
    log.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "kind": st.sampled_from(["access", "events", "all"]),
            "limit": st.integers(1, 1000),
            "student_id": st.sampled_from(["s1", "s2", "nobody"]),
            "since": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
            | st.integers(-(2**40), 2**40),
        },
    )
)
async def test_any_valid_query_is_answered(
    res: Resources, tenant: str, body: dict[str, object]
) -> None:
    """Far pasts, far futures, epoch numbers: a valid query is a 200 (or a 422), never a 5xx."""
    async with serve("audit-log", AUDIT, res) as audit:
        resp = await _audit(audit, tenant, **body)
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 200:
        records = resp.json()["records"]
        assert len(records) <= int(str(body.get("limit", 100)))

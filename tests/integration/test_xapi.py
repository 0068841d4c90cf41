"""xAPI intake against real Redis and the broker: POST /xapi/statements and mastery.xapi."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import orjson
import pytest

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.domain.days import day_number
from mastery.events.kafka import to_record
from mastery.events.xapi import QUALITY
from mastery.logs import logger
from mastery.ports import Record
from mastery.store import Outcome, keys
from mastery.store.audit import recent_outcomes
from mastery.topics import AUDIT_TOPIC, XAPI_TOPIC, dlq_topic
from mastery.web.events import topic_handler
from mastery.web.query import query_mastery
from mastery.web.xapi import post_statements
from tests.conftest import JWT_SECRET
from tests.helpers import headers_of, read_to_end, xapi_statement, xapi_voiding
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    import httpx
    from redis.asyncio import Redis

    from mastery.bootstrap import Resources
    from mastery.ports import OutMessage, Publisher
    from mastery.settings import Settings

_V = {"x-experience-api-version": "1.0.3"}


async def test_statements_posted_as_an_lrs_client_sends_them(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")
    routes = {"POST /xapi/statements": post_statements, "POST /mastery/query": query_mastery}
    admin = token("a1", "admin", tenant)
    scored = xapi_statement("s1", "scored", scaled=None, class_id="c1")
    scored["result"] = {"score": {"raw": 6, "min": 0, "max": 10}}
    completed = xapi_statement("s1", "completed", scaled=1.0)
    unmapped = xapi_statement("s1", "experienced", scaled=None)
    async with serve("on-xapi", routes, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=[scored, completed, unmapped], headers={**admin, **_V}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == [scored["id"], completed["id"], unmapped["id"]]
        again = await fn.post("/xapi/statements", json=scored, headers={**admin, **_V})
        assert again.json() == [scored["id"]]  # a resent statement counts once
        doc = (await fn.post("/mastery/query", json={"student_id": "s1"}, headers=admin)).json()
    assert doc["components"]["quiz"] == {**doc["components"]["quiz"], "score": 0.6, "events": 1}
    assert doc["components"]["completion"]["score"] == 1.0
    assert doc["version"] == 2
    await res.aclose()


async def test_every_answer_of_the_xapi_resource_names_the_xapi_version(
    client: Callable[[str], httpx.AsyncClient], tenant: str
) -> None:
    """xAPI 1.0.3 Communication 3.3: every response carries X-Experience-API-Version,
    the latest patch version; errors too."""
    fn = client("on-xapi")
    admin = {**token("a1", "admin", tenant), **_V}
    statement = xapi_statement("s11", "passed", scaled=0.8)
    answers = {
        200: await fn.post("/xapi/statements", json=statement, headers=admin),
        400: await fn.post(
            "/xapi/statements", json=statement, headers=token("a1", "admin", tenant)
        ),
        401: await fn.post("/xapi/statements", json=statement, headers=_V),
        403: await fn.post(
            "/xapi/statements", json=statement, headers={**token("s1", "student", tenant), **_V}
        ),
        405: await fn.delete("/xapi/statements", headers=admin),
        415: await fn.post(
            "/xapi/statements", content=b"x", headers={**admin, "content-type": "text/plain"}
        ),
    }
    for status, resp in answers.items():
        assert resp.status_code == status, resp.text
        assert resp.headers["x-experience-api-version"] == "1.0.3", status
    # Not on the function's other paths: the topic's deliveries, health.
    assert "x-experience-api-version" not in (await fn.get("/health")).headers


async def test_the_about_resource_needs_no_token_and_writes_no_access_record(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    """xAPI 1.0.3 Communication 2.8: ``GET /xapi/about`` names the versions spoken, without
    credentials and whatever the version header says; like ``/health``, it reads no data,
    so it leaves no access record (the statements resource beside it does, even refused)."""
    fn = client("on-xapi")
    cid = f"{tenant}-about"
    answers = [
        await fn.get("/xapi/about", headers={"x-correlation-id": cid}),
        await fn.get("/xapi/about", headers={"x-experience-api-version": "2.0.0"}),
        await fn.get("/xapi/about", headers=token("a1", "admin", tenant)),
    ]
    for resp in answers:
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"version": ["1.0.3"]}
        assert resp.headers["x-experience-api-version"] == "1.0.3"
    wrong = await fn.post("/xapi/about", json={})
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET")
    assert wrong.headers["x-experience-api-version"] == "1.0.3"
    refused = await fn.post("/xapi/statements", json={}, headers={"x-correlation-id": f"{cid}-x"})
    assert refused.status_code == 401
    audited = {
        doc.get("correlation_id"): doc["route"]
        for m in read_to_end(settings, AUDIT_TOPIC)
        if (doc := orjson.loads(m.value())).get("correlation_id", "").startswith(cid)
    }
    assert audited == {f"{cid}-x": "POST /xapi/statements"}


async def test_a_statement_put_under_its_id_as_tincan_sends_it(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    """``PUT /xapi/statements?statementId=``: 204, on the same path as a POST."""
    fn = client("on-xapi")
    admin = {**token("a1", "admin", tenant), **_V}
    statement = xapi_statement("s12", "passed", scaled=0.7)
    sid = str(statement.pop("id"))  # the parameter names it; the body may omit it
    cid = f"{tenant}-put"
    stored = await fn.put(
        "/xapi/statements",
        params={"statementId": sid},
        json=statement,
        headers={**admin, "x-correlation-id": cid},
    )
    assert stored.status_code == 204, stored.text
    assert stored.content == b""
    assert stored.headers["x-experience-api-version"] == "1.0.3"
    res = build(settings, source="test")
    state = await res.store.load(tenant, "s12")
    assert state is not None
    assert state.components[Component.QUIZ].count == 1
    # Again, with the id in the body too (any spelling of it), over HTTP Basic: counted once.
    again = await fn.put(
        "/xapi/statements",
        params={"statementId": sid.upper()},
        json={**statement, "id": sid},
        headers={**_basic("admin", tenant), **_V},
    )
    assert again.status_code == 204, again.text
    state = await res.store.load(tenant, "s12")
    assert state is not None
    assert state.version == 1
    # On the topic as a posted statement is, under its id, with the token's tenant (each
    # time: the topic's consumers meet the second as a duplicate).
    messages = [m for m in read_to_end(settings, XAPI_TOPIC) if headers_of(m).get("ce_id") == sid]
    assert len(messages) == 2
    for message in messages:
        assert headers_of(message)["mastery_tenant"] == tenant
        assert orjson.loads(message.value())["id"] == sid
    [access] = [
        doc
        for m in read_to_end(settings, AUDIT_TOPIC)
        if (doc := orjson.loads(m.value())).get("correlation_id") == cid
    ]
    assert (access["route"], access["students"], access["status"]) == (
        "PUT /xapi/statements",
        ["s12"],
        204,
    )
    await res.aclose()


async def test_a_put_is_refused_unless_its_statement_id_and_body_agree(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    fn = client("on-xapi")
    admin = {**token("a1", "admin", tenant), **_V}
    statement = xapi_statement("s13", "passed", scaled=0.7)
    sid = str(statement["id"])

    async def put(params: dict[str, str] | str, body: object) -> httpx.Response:
        return await fn.put("/xapi/statements", params=params, json=body, headers=admin)

    other = str(uuid.uuid4())
    refusals = {
        "the body's id differs": await put({"statementId": other}, statement),
        "no statementId": await put({}, statement),
        "statementId not a UUID": await put({"statementId": "s13"}, statement),
        "statementId twice": await put(f"statementId={sid}&statementId={other}", statement),
        "an array": await put({"statementId": sid}, [statement]),
        "an id that is no string": await put({"statementId": sid}, {**statement, "id": 7}),
        "invalid xAPI": await put({"statementId": sid}, {**statement, "verb": {"id": "x"}}),
    }
    student = await fn.put(
        "/xapi/statements",
        params={"statementId": sid},
        json=statement,
        headers={**token("s13", "student", tenant), **_V},
    )
    for why, resp in refusals.items():
        assert resp.status_code == 400, (why, resp.text)
        assert resp.headers["content-type"] == "application/problem+json", why
        assert resp.headers["x-experience-api-version"] == "1.0.3", why
    assert "statementId" in refusals["the body's id differs"].json()["detail"]
    assert "verb" in refusals["invalid xAPI"].json()["statements"][0]["reason"]
    assert student.status_code == 403
    res = build(settings, source="test")
    assert await res.store.load(tenant, "s13") is None  # nothing of any of them stored
    await res.aclose()


def _basic(role: str, tenant: str, *, user: str = "moodle", ttl: int = 300) -> dict[str, str]:
    """HTTP Basic credentials as Moodle's logstore_xapi sends them: the token as password."""
    claims = {"sub": "lrs", "role": role, "tenant": tenant, "exp": int(time.time()) + ttl}
    password = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {credentials}", "content-type": "application/json"}


async def test_http_basic_with_the_token_as_password_on_the_xapi_route_only(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")
    routes = {"POST /xapi/statements": post_statements, "POST /mastery/query": query_mastery}
    statement = xapi_statement("s10", "passed", scaled=0.8)
    cid = f"{tenant}-basic"
    async with serve("on-xapi", routes, res) as fn:
        ok = await fn.post(
            "/xapi/statements",
            json=statement,
            headers={**_basic("admin", tenant), **_V, "x-correlation-id": cid},
        )
        student = await fn.post(
            "/xapi/statements", json=statement, headers={**_basic("student", tenant), **_V}
        )
        expired = await fn.post(
            "/xapi/statements",
            json=statement,
            headers={**_basic("admin", tenant, ttl=-3600), **_V},
        )
        elsewhere = await fn.post(
            "/mastery/query", json={"student_id": "s10"}, headers=_basic("admin", tenant)
        )
    assert ok.status_code == 200, ok.text
    assert ok.json() == [statement["id"]]
    assert await res.store.load(tenant, "s10") is not None  # in the token's tenant
    assert student.status_code == 403  # the same roles as a bearer token
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"] == 'Bearer realm="mastery", Basic realm="mastery"'
    # Only the xAPI route takes Basic: elsewhere it is no credential at all.
    assert elsewhere.status_code == 401
    assert elsewhere.headers["www-authenticate"] == 'Bearer realm="mastery"'
    [access] = [
        doc
        for m in read_to_end(settings, AUDIT_TOPIC)
        if (doc := orjson.loads(m.value())).get("correlation_id") == cid
    ]
    assert (access["subject"], access["role"], access["tenant"], access["students"]) == (
        "lrs",
        "admin",
        tenant,
        ["s10"],
    )
    await res.aclose()


async def test_bad_statements_are_400_and_nothing_is_stored(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")
    routes = {"POST /xapi/statements": post_statements, "POST /mastery/query": query_mastery}
    admin = token("a1", "admin", tenant)
    good = xapi_statement("s2", "scored")
    bad = {**xapi_statement("s2", "scored"), "verb": {"id": "not an iri"}}
    async with serve("on-xapi", routes, res) as fn:
        no_version = await fn.post("/xapi/statements", json=good, headers=admin)
        mixed = await fn.post("/xapi/statements", json=[good, bad], headers={**admin, **_V})
        student = await fn.post(
            "/xapi/statements", json=good, headers={**token("s2", "student", tenant), **_V}
        )
        query = await fn.post("/mastery/query", json={"student_id": "s2"}, headers=admin)
    assert no_version.status_code == 400
    assert "X-Experience-API-Version" in no_version.json()["detail"]
    assert mixed.status_code == 400
    assert mixed.headers["content-type"] == "application/problem+json"
    [refused] = mixed.json()["statements"]
    assert refused["index"] == 1
    assert "verb" in refused["reason"]
    assert student.status_code == 403
    assert query.status_code == 404  # all or nothing: the good one was not applied either
    await res.aclose()


async def test_a_batch_repeating_a_statement_id_is_400_and_nothing_is_stored(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")
    routes = {"POST /xapi/statements": post_statements, "POST /mastery/query": query_mastery}
    admin = token("a1", "admin", tenant)
    first = xapi_statement("s8", "passed", scaled=0.9)
    # The same id, as another spelling of the UUID: the engine keys statements by the UUID.
    again = {**xapi_statement("s8", "failed", scaled=0.1), "id": str(first["id"]).upper()}
    other = xapi_statement("s8", "completed", scaled=None)
    async with serve("on-xapi", routes, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=[first, other, again], headers={**admin, **_V}
        )
        query = await fn.post("/mastery/query", json={"student_id": "s8"}, headers=admin)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    [refused] = resp.json()["statements"]
    assert refused["index"] == 2
    assert "statement 0" in refused["reason"]
    assert query.status_code == 404  # none of the batch was applied
    await res.aclose()


async def test_timestamps_without_an_offset_or_with_plus_0000_are_taken_as_utc(
    settings: Settings, tenant: str, redis: Redis
) -> None:
    """Moodle and other LMSs send ``2026-01-02T03:04:05`` or ``+0000``: valid ISO 8601."""
    res = build(settings, source="test")
    at = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    naive = xapi_statement("s9", "passed", scaled=0.9)
    naive["timestamp"] = at.strftime("%Y-%m-%dT%H:%M:%S")
    basic_offset = xapi_statement("s9", "completed", scaled=None)
    basic_offset["timestamp"] = (at - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
        resp = await fn.post(
            "/xapi/statements",
            json=[naive, basic_offset],
            headers={**token("a1", "admin", tenant), **_V},
        )
    assert resp.status_code == 200, resp.text
    state = await res.store.load(tenant, "s9")
    assert state is not None
    assert state.components.keys() == {Component.QUIZ, Component.COMPLETION}
    assert state.last_event_at == at.timestamp()  # the newest, read as UTC
    await res.aclose()


def _nested(levels: int) -> object:
    value: object = "deep"
    for _ in range(levels):
        value = [value]
    return value


async def test_a_statement_nested_too_deep_is_refused_not_a_crash(
    settings: Settings, tenant: str
) -> None:
    """orjson reads 1,024 levels and writes 254: a statement is written again after it is
    read (its record, its derived id), which crashed the consumer on one such record,
    again at every restart, and answered 500 over HTTP."""
    res = build(settings, source="test")
    deep = xapi_statement("s5", "scored")
    deep["result"]["extensions"] = {"https://lms.example/ext/any": _nested(300)}
    deep.pop("id")  # its id is then derived from its content
    fine = xapi_statement("s6", "scored")
    header = {"content-type": b"application/json", "mastery_tenant": tenant.encode()}
    written = [json.dumps(s).encode() for s in (deep, fine)]  # orjson writes 254 levels at most
    records = [Record(XAPI_TOPIC, value, b"s", header) for value in written]
    results = await res.ingestor.ingest(records)
    assert [o for o, _ in results] == [Outcome.REJECTED, Outcome.APPLIED]
    assert "nested deeper than 64 levels" in (results[0][1] or "")

    admin = {**token("a1", "admin", tenant), **_V}
    routes = {"POST /xapi/statements": post_statements}
    async with serve("on-xapi", routes, res) as fn:
        posted = await fn.post("/xapi/statements", json=deep, headers=admin)
    assert posted.status_code == 400, posted.text
    assert "nested deeper than 64 levels" in posted.json()["detail"]
    await res.aclose()


async def test_the_topic_maps_home_pages_to_tenants_and_dead_letters_the_bad(
    settings: Settings, tenant: str
) -> None:
    home = f"https://{tenant}.lms.example"
    res = build(settings.model_copy(update={"xapi_tenants": {home: tenant}}), source="test")
    good = xapi_statement("s3", "passed", scaled=0.9, home_page=home)
    unknown = xapi_statement("s3", "passed", home_page="https://nobody.example")
    ignored = xapi_statement("s3", "experienced", scaled=None, home_page=home)
    marker = uuid.uuid4().hex
    records = [
        Record(XAPI_TOPIC, orjson.dumps(s), b"s3", {"content-type": b"application/json"})
        for s in (good, unknown, ignored)
    ]
    records.append(
        Record(XAPI_TOPIC, marker.encode(), b"s3", {"content-type": b"application/json"})
    )
    results = await res.ingestor.ingest(records)
    assert [o for o, _ in results] == [
        Outcome.APPLIED,
        Outcome.REJECTED,
        Outcome.IGNORED,
        Outcome.REJECTED,
    ]
    assert "no tenant configured" in (results[1][1] or "")
    state = await res.store.load(tenant, "s3")
    assert state is not None
    assert state.version == 1
    dead = [m for m in read_to_end(settings, dlq_topic(XAPI_TOPIC)) if m.value() == marker.encode()]
    assert len(dead) == 1
    assert headers_of(dead[0])["dlq_reason"].startswith("malformed JSON")
    again = await res.ingestor.ingest(records[:1])
    assert again == [(Outcome.DUPLICATE, None)]
    # Every event audited, the ignored one too, in its tenant's stream, with the reason.
    audited = {e.outcome: e for e in (await recent_outcomes(res.store, tenant, 10)).entries}
    assert set(audited) == {"applied", "ignored", "duplicate"}
    assert audited["applied"].event["event_id"] == good["id"]
    assert audited["ignored"].event["event_id"] == ignored["id"]
    assert audited["ignored"].event["student_id"] == "s3"
    assert "maps to no component" in (audited["ignored"].reason or "")
    await res.aclose()


async def test_a_statement_dead_lettered_from_the_topic_is_logged_with_its_id(
    settings: Settings, tenant: str
) -> None:
    """As an LRS forwards them to mastery.xapi: bare statements, no ce_id. The log line
    of each one dead-lettered names the statement's id, however it was refused (bounded,
    as every logged field is), never the statement itself."""
    home = f"https://{tenant}.lms.example"
    settings = settings.model_copy(update={"xapi_tenants": {home: tenant}})
    res = build(settings, source="on-xapi")
    unknown = xapi_statement("student-s40", "passed", home_page="https://nobody.example")
    invalid = xapi_statement("student-s40", "passed", home_page=home)
    invalid["verb"] = {"id": "not an IRI"}
    long_id = xapi_statement("student-s40", "passed", home_page=home)
    long_id["id"] = "x" * 5000
    outcomes = []
    stream = io.StringIO()
    handler = logger("on-xapi")._logger.handlers[0]  # type: ignore[attr-defined]
    before = handler.setStream(stream)
    try:
        async with serve(
            "on-xapi", {"POST /": topic_handler(XAPI_TOPIC)}, res, uses_auth=False
        ) as fn:
            for statement in (unknown, invalid, long_id):
                resp = await fn.post(
                    "/",
                    content=orjson.dumps(statement),
                    headers={"content-type": "application/json"},
                )
                outcomes.append(resp.json()["outcome"])
    finally:
        handler.setStream(before)
        await res.aclose()
    assert outcomes == ["rejected"] * 3
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    dead = [line for line in lines if line["message"] == "event dead-lettered"]
    assert [line.get("event_id") for line in dead] == [unknown["id"], invalid["id"], "x" * 300]
    assert dead[0]["reason"].startswith("no tenant configured")
    assert [line["reason"].split(":")[0] for line in dead[1:]] == ["not a valid xAPI statement"] * 2
    assert not any("student-s40" in orjson.dumps(line).decode() for line in dead)


# Voiding ------------------------------------------------------------------------------

_AREA = "https://w3id.org/xapi/mastery-engine/extensions/area"


def _topic(*statements: dict[str, object]) -> list[Record]:
    return [
        Record(XAPI_TOPIC, orjson.dumps(s), b"k", {"content-type": b"application/json"})
        for s in statements
    ]


_NOW = datetime.now(UTC)


def _history_of(student: str, home: str, now: datetime = _NOW) -> list[dict[str, object]]:
    """A student's statements over four days: a quiz, a completion, in class c1 (at the
    same times for every student: their sums compare)."""
    quiz = xapi_statement(student, "scored", scaled=0.8, home_page=home, at=now - timedelta(3))
    done = xapi_statement(student, "completed", scaled=1.0, home_page=home, at=now - timedelta(1))
    return [quiz, done]


def _voidable(student: str, home: str, now: datetime = _NOW) -> list[dict[str, object]]:
    """Statements whose effect is voided: a quiz in an area of its own on a day of its own
    (between the others: the newest event stays the same), and the only quality event."""
    quiz = xapi_statement(student, "scored", scaled=0.3, home_page=home, at=now - timedelta(2))
    quiz["context"]["extensions"] = {_AREA: "algebra"}  # type: ignore[index]
    quality = xapi_statement(student, "experienced", scaled=None, home_page=home, at=now)
    quality["result"] = {"extensions": {QUALITY: 0.9}}
    quality["timestamp"] = (now - timedelta(days=1, hours=1)).isoformat()
    return [quiz, quality]


async def _snapshot(redis: Redis, tenant: str, student: str) -> dict[str, object]:
    """What the store holds about a student, but for what counts writes (version, times,
    the audit entry it was born at)."""
    state = {
        k.decode(): v.decode()
        for k, v in (await redis.hgetall(keys.state(tenant, student))).items()
        if k not in (b"version", b"updated_at", b"born")
    }
    sums = {  # a sum less what was added is the sum without it, but for rounding
        k: pytest.approx(float(v), rel=1e-12) if k.endswith((":s", ":w")) else v
        for k, v in state.items()
    }
    indexes = [await redis.zscore(keys.tenant_index(tenant, m), student) for m in keys.METRICS]
    in_class = await redis.hget(keys.class_index(tenant, "c1"), student)
    days = await redis.get(keys.days(tenant, student))
    return {"state": sums, "days": days, "indexes": indexes, "class": in_class}


async def _outcomes(res: Resources, records: list[Record]) -> list[Outcome]:
    return [o for o, _ in await res.ingestor.ingest(records)]


@pytest.fixture
async def mapped(settings: Settings, tenant: str) -> AsyncIterator[tuple[str, Resources]]:
    """The tenant's homePage, and resources that map it to the tenant."""
    home = f"https://{tenant}.lms.example"
    res = build(settings.model_copy(update={"xapi_tenants": {home: tenant}}), source="test")
    yield home, res
    await res.aclose()


async def test_voiding_a_statement_leaves_the_state_as_if_it_never_came(
    mapped: tuple[str, Resources], tenant: str, redis: Redis
) -> None:
    home, res = mapped
    voided = _voidable("a", home)
    assert await _outcomes(res, _topic(*_history_of("a", home), *voided)) == [Outcome.APPLIED] * 4
    await _outcomes(res, _topic(*_history_of("b", home)))  # b: never got them
    for k in ("a", "b"):
        assert (await redis.hget(keys.state(tenant, k), "quality:n")) == (
            b"1" if k == "a" else None
        )
    assert await _snapshot(redis, tenant, "a") != await _snapshot(redis, tenant, "b")
    voidings = [xapi_voiding("a", str(s["id"]), home_page=home) for s in voided]
    assert await _outcomes(res, _topic(*voidings)) == [Outcome.VOIDING] * 2
    assert await _snapshot(redis, tenant, "a") == await _snapshot(redis, tenant, "b")
    assert await res.store.history(tenant, "a") == await res.store.history(tenant, "b")
    a, b = await res.store.load(tenant, "a"), await res.store.load(tenant, "b")
    assert a is not None
    assert b is not None
    assert a.version == 6  # four statements, two voidings: a read cache sees the change
    assert a.components.keys() == b.components.keys() == {Component.QUIZ, Component.COMPLETION}
    assert a.areas == b.areas == {}
    # Voiding again, by the same statements or new ones, counts once; the voided ones
    # are refused when they come again.
    again = [xapi_voiding("a", str(s["id"]), home_page=home) for s in voided]
    assert await _outcomes(res, _topic(*voidings, *again)) == [Outcome.DUPLICATE] * 4
    assert await _outcomes(res, _topic(*voided)) == [Outcome.VOIDED] * 2
    assert await _snapshot(redis, tenant, "a") == await _snapshot(redis, tenant, "b")
    audit = await redis.xrange(keys.audit(tenant))
    voiding_audits = [f for _, f in audit if f[b"outcome"] == b"voiding"]
    assert [orjson.loads(f[b"event"])["voids"] for f in voiding_audits] == [
        str(s["id"]) for s in voided
    ]


async def test_a_voiding_before_its_statement_bars_it(
    mapped: tuple[str, Resources], tenant: str, redis: Redis
) -> None:
    home, res = mapped
    await _outcomes(res, _topic(*_history_of("a", home), *_history_of("b", home)))
    [late, _] = _voidable("a", home)
    voiding = xapi_voiding("a", str(late["id"]), home_page=home)
    # In one batch, the voiding first: and in two batches.
    assert await _outcomes(res, _topic(voiding, late)) == [Outcome.VOIDING, Outcome.VOIDED]
    assert await _outcomes(res, _topic(late)) == [Outcome.VOIDED]
    assert await _snapshot(redis, tenant, "a") == await _snapshot(redis, tenant, "b")
    # A statement and its voiding in one batch, the other way round: no effect either.
    [_, other] = _voidable("a", home)
    other_voiding = xapi_voiding("a", str(other["id"]), home_page=home)
    assert await _outcomes(res, _topic(other, other_voiding)) == [
        Outcome.APPLIED,
        Outcome.VOIDING,
    ]
    assert await _snapshot(redis, tenant, "a") == await _snapshot(redis, tenant, "b")


async def test_a_voiding_reaches_no_other_tenant_nor_student(
    settings: Settings, tenant: str, redis: Redis
) -> None:
    other_tenant = f"{tenant}-other"
    home, other_home = f"https://{tenant}.lms.example", f"https://{other_tenant}.lms.example"
    mapping = {home: tenant, other_home: other_tenant}
    res = build(settings.model_copy(update={"xapi_tenants": mapping}), source="test")
    statements = _history_of("a", home)
    await _outcomes(res, _topic(*statements))
    before = await _snapshot(redis, tenant, "a")
    target = str(statements[0]["id"])
    # The same student name in another tenant, and another student of the same tenant:
    # neither holds the statement, so each only bars it for themselves.
    elsewhere = xapi_voiding("a", target, home_page=other_home)
    someone_else = xapi_voiding("b", target, home_page=home)
    assert await _outcomes(res, _topic(elsewhere, someone_else)) == [Outcome.VOIDING] * 2
    assert await _snapshot(redis, tenant, "a") == before
    assert await redis.exists(keys.state(other_tenant, "a"), keys.state(tenant, "b")) == 0
    # Over HTTP the tenant is the token's, whatever the homePage says.
    routes = {"POST /xapi/statements": post_statements}
    async with serve("on-xapi", routes, res) as fn:
        voiding = xapi_voiding("a", target, home_page=home)
        resp = await fn.post(
            "/xapi/statements", json=voiding, headers={**token("a1", "admin", other_tenant), **_V}
        )
    assert resp.status_code == 200, resp.text
    assert await _snapshot(redis, tenant, "a") == before
    await res.aclose()


async def test_erasure_deletes_what_a_voiding_needs(
    mapped: tuple[str, Resources], tenant: str, redis: Redis
) -> None:
    home, res = mapped
    await _outcomes(res, _topic(*_history_of("a", home)))
    assert await redis.hlen(keys.xapi(tenant, "a")) == 3  # two statements, the prune mark
    await res.store.erase(tenant, "a", datetime.now(UTC))
    assert await redis.exists(keys.xapi(tenant, "a")) == 0


# Posted statements on the topic ----------------------------------------------------------


async def test_posted_statements_go_on_the_topic_with_their_tenant(
    settings: Settings, tenant: str
) -> None:
    res = build(settings, source="test")  # no homePage mapping: the header names the tenant
    posted = xapi_statement("s5", "passed", scaled=0.7, home_page="https://nobody.example")
    async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=posted, headers={**token("a1", "admin", tenant), **_V}
        )
    assert resp.status_code == 200, resp.text
    [message] = [
        m for m in read_to_end(settings, XAPI_TOPIC) if headers_of(m).get("ce_id") == posted["id"]
    ]
    assert headers_of(message)["mastery_tenant"] == tenant
    assert message.key() == b"s5"
    # The topic's consumer meets it as a duplicate, in the tenant the header names.
    assert await _outcomes(res, [to_record(message)]) == [Outcome.DUPLICATE]
    state = await res.store.load(tenant, "s5")
    assert state is not None
    assert state.version == 1
    await res.aclose()


async def test_a_statement_without_a_timestamp_is_dated_before_it_goes_on_the_topic(
    settings: Settings, tenant: str
) -> None:
    """As an LRS does, `stored` is set and stands for a missing `timestamp`: the topic's
    consumers and a rebuild then date the statement as this request did, not by their own
    clocks (which could put it in another idempotency bucket: counted twice)."""
    res = build(settings, source="test")
    posted = xapi_statement("s6", "passed", scaled=0.7)
    del posted["timestamp"]
    async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=posted, headers={**token("a1", "admin", tenant), **_V}
        )
    assert resp.status_code == 200, resp.text
    [message] = [
        m for m in read_to_end(settings, XAPI_TOPIC) if headers_of(m).get("ce_id") == posted["id"]
    ]
    sent = orjson.loads(message.value() or b"{}")
    assert sent["timestamp"] == sent["stored"]
    assert abs(datetime.fromisoformat(sent["stored"]) - datetime.now(UTC)) < timedelta(minutes=1)
    await res.aclose()


async def test_a_statement_resent_with_a_time_in_another_bucket_counts_once(
    mapped: tuple[str, Resources], tenant: str
) -> None:
    """Its idempotency bucket follows its time; the student's xAPI hash, per statement,
    knows it was applied whatever the bucket."""
    home, res = mapped
    now = datetime.now(UTC)
    first = xapi_statement("s7", "passed", scaled=0.6, home_page=home, at=now - timedelta(days=45))
    again = {**first, "timestamp": (now - timedelta(days=1)).isoformat()}
    assert await _outcomes(res, _topic(first)) == [Outcome.APPLIED]
    assert await _outcomes(res, _topic(again)) == [Outcome.DUPLICATE]
    state = await res.store.load(tenant, "s7")
    assert state is not None
    assert state.version == 1


async def test_the_tenant_header_wins_over_the_home_page(settings: Settings, tenant: str) -> None:
    home = f"https://{tenant}.lms.example"
    res = build(settings.model_copy(update={"xapi_tenants": {home: "elsewhere"}}), source="test")
    [statement] = _topic(xapi_statement("s6", "passed", home_page=home))
    named = Record(
        statement.topic,
        statement.value,
        statement.key,
        {**statement.headers, "mastery_tenant": tenant.encode()},
    )
    bad = Record(
        statement.topic,
        statement.value,
        statement.key,
        {**statement.headers, "mastery_tenant": b"not a tenant"},
    )
    outcomes = await res.ingestor.ingest([named, bad])
    assert [o for o, _ in outcomes] == [Outcome.APPLIED, Outcome.REJECTED]
    assert "mastery_tenant" in (outcomes[1][1] or "")
    assert await res.store.load(tenant, "s6") is not None
    assert await res.store.load("elsewhere", "s6") is None
    await res.aclose()


async def test_without_the_broker_a_post_is_503_and_nothing_is_applied(
    settings: Settings, tenant: str
) -> None:
    no_broker = settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
    )
    res = build(no_broker, source="test")
    statement = xapi_statement("s7", "passed")
    async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=statement, headers={**token("a1", "admin", tenant), **_V}
        )
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert await res.store.load(tenant, "s7") is None
    await res.aclose()


async def test_what_a_voiding_needs_is_kept_the_window_long(
    mapped: tuple[str, Resources], tenant: str, redis: Redis
) -> None:
    home, res = mapped
    today = day_number(datetime.now(UTC).timestamp())
    key = keys.xapi(tenant, "a")
    window = res.model.window.days
    old, kept = struct.pack("<H", today - window), struct.pack("<H", today - window + 1)
    # A voided mark at the window's edge and one inside; last pruned 8 days ago.
    await redis.hset(key, mapping={"1": b"v" + old, "2": b"v" + kept, "_p": today - 8})
    await _outcomes(res, _topic(*_history_of("a", home)))
    fields = await redis.hgetall(key)
    assert b"1" not in fields
    assert fields[b"2"] == b"v" + kept
    assert fields[b"_p"] == str(today).encode()
    assert len(fields) == 4  # the two statements, the kept mark, the prune day
    # Pruned at most once a week: an old mark written now stays until then.
    await redis.hset(key, "1", b"v" + old)
    await _outcomes(res, _topic(*_history_of("a", home, _NOW - timedelta(hours=1))))
    assert await redis.hget(key, "1") == b"v" + old
    assert 0 < await redis.ttl(key) <= window * 86400


# A different statement under a held id ---------------------------------------------------


def _otherwise(statement: dict[str, Any]) -> dict[str, Any]:
    """``statement``'s id on a statement that says something else (another score)."""
    return {**statement, "result": {"score": {"scaled": 0.2}}}


async def test_a_different_statement_under_a_held_id_is_409_and_changes_nothing(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, tenant: str
) -> None:
    """xAPI 1.0.3, Communication 2.1.1, 2.1.2: the statement held is not modified, and a
    different one under its id is answered 409; the same one again, as before (200/204)."""
    fn = client("on-xapi")
    admin = {**token("a1", "admin", tenant), **_V}
    first = xapi_statement("s21", "passed", scaled=0.7)
    del first["timestamp"]  # dated by the engine each time it comes
    sid = first["id"]
    assert (await fn.post("/xapi/statements", json=first, headers=admin)).status_code == 200
    # The same statement, as another sender spells it: not a conflict, counted once.
    same = {**first, "id": sid.upper(), "verb": {**first["verb"], "display": {"en": "passed"}}}
    again = await fn.put("/xapi/statements", params={"statementId": sid}, json=same, headers=admin)
    assert again.status_code == 204, again.text
    # Says otherwise: 409 to a PUT, and to a POST, whose other statements are not stored.
    fresh = xapi_statement("s22", "passed", scaled=0.9)
    cid = f"{tenant}-conflict"
    posted = await fn.post(
        "/xapi/statements",
        json=[fresh, _otherwise(first)],
        headers={**admin, "x-correlation-id": cid},
    )
    put = await fn.put(
        "/xapi/statements", params={"statementId": sid}, json=_otherwise(first), headers=admin
    )
    for resp in (posted, put):
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["x-experience-api-version"] == "1.0.3"
        assert sid in resp.json()["detail"]
    [named] = posted.json()["statements"]
    assert (named["index"], named["id"]) == (1, sid)
    res = build(settings, source="test")
    state = await res.store.load(tenant, "s21")
    assert state is not None
    assert (state.version, state.components[Component.QUIZ].mean) == (1, pytest.approx(0.7))
    assert await res.store.load(tenant, "s22") is None
    await res.aclose()
    # Nothing of the refused requests went on the topic: the first and its resend only.
    topic = read_to_end(settings, XAPI_TOPIC)
    assert len([m for m in topic if headers_of(m).get("ce_id", "").lower() == sid]) == 2
    assert not [m for m in topic if headers_of(m).get("ce_id") == fresh["id"]]
    [access] = [
        doc
        for m in read_to_end(settings, AUDIT_TOPIC)
        if (doc := orjson.loads(m.value())).get("correlation_id") == cid
    ]
    assert (access["status"], access["students"]) == (409, ["s21", "s22"])


async def test_on_the_topic_a_different_statement_under_a_held_id_is_dead_lettered(
    mapped: tuple[str, Resources], settings: Settings, tenant: str
) -> None:
    """Not applied, audited and dead-lettered with the reason, as a refused event is;
    the statement held stays as it was, voided or not."""
    home, res = mapped
    first = xapi_statement("s23", "passed", scaled=0.7, home_page=home)
    other = _otherwise(first)
    results = await res.ingestor.ingest(_topic(first, other, first))
    assert [o for o, _ in results] == [Outcome.APPLIED, Outcome.REJECTED, Outcome.DUPLICATE]
    assert f"statement {first['id']} differs from the one held" in (results[1][1] or "")
    state = await res.store.load(tenant, "s23")
    assert state is not None
    assert (state.version, state.components[Component.QUIZ].mean) == (1, pytest.approx(0.7))
    dead = [
        m
        for m in read_to_end(settings, dlq_topic(XAPI_TOPIC))
        if m.value() == _topic(other)[0].value
    ]
    assert len(dead) == 1
    assert headers_of(dead[0])["dlq_reason"] == results[1][1]
    audited = [e for e in (await recent_outcomes(res.store, tenant, 10)).entries]
    [rejected] = [e for e in audited if e.outcome == "rejected"]
    assert rejected.reason == results[1][1]
    assert rejected.event["event_id"] == first["id"]
    # Voided, the statement is still told from another under its id.
    voiding = xapi_voiding("s23", first["id"], home_page=home)
    assert await _outcomes(res, _topic(voiding)) == [Outcome.VOIDING]
    assert await _outcomes(res, _topic(other, first)) == [Outcome.REJECTED, Outcome.VOIDED]


async def test_a_statement_kept_before_digests_were_is_not_compared(
    mapped: tuple[str, Resources], tenant: str, redis: Redis
) -> None:
    """An entry written by the engine before it kept what a statement said (``a``): a
    statement under its id is a duplicate, as it was then, whatever it says."""
    home, res = mapped
    first = xapi_statement("s24", "passed", scaled=0.7, home_page=home)
    assert await _outcomes(res, _topic(first)) == [Outcome.APPLIED]
    key, field = keys.xapi(tenant, "s24"), str(keys.event_hash(first["id"]))
    entry = await redis.hget(key, field)
    assert entry is not None
    assert entry[:1] == b"c"
    start = 1 + keys.XAPI_APPLIED.size
    await redis.hset(key, field, b"a" + entry[1:start] + entry[start + keys.XAPI_DIGEST :])
    assert await _outcomes(res, _topic(_otherwise(first), first)) == [Outcome.DUPLICATE] * 2
    # And it is voided as before.
    voiding = xapi_voiding("s24", first["id"], home_page=home)
    assert await _outcomes(res, _topic(voiding)) == [Outcome.VOIDING]
    state = await res.store.load(tenant, "s24")
    assert state is not None
    assert Component.QUIZ not in state.components


class _Between:
    """A publisher that lets another writer in before its first publish: a request that
    came between this one's check of the held ids and its apply."""

    def __init__(self, inner: Publisher, first: Callable[[], Awaitable[object]]) -> None:
        self._inner = inner
        self._first: Callable[[], Awaitable[object]] | None = first

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            await first()
        await self._inner.publish(messages)


async def test_a_different_statement_stored_in_between_is_still_refused(
    settings: Settings, tenant: str
) -> None:
    """The check before the topic is a read; the apply's own, atomic, decides: a request
    that stored a different statement under the id in between wins, and this one is
    409 and dead-lettered (its other statements were on the topic already: stored)."""
    mine = xapi_statement("s25", "passed", scaled=0.7)
    theirs = _otherwise(mine)
    fresh = xapi_statement("s26", "passed", scaled=0.9)
    other = build(settings, source="test")
    res = build(settings, source="test")

    async def store_theirs() -> object:
        record = Record(
            XAPI_TOPIC, orjson.dumps(theirs), b"s25", {"content-type": b"application/json"}
        )
        return await other.ingestor.ingest([record], tenant=tenant)

    kafka = res.publisher
    res.publisher = _Between(kafka, store_theirs)  # type: ignore[assignment]
    async with serve("on-xapi", {"POST /xapi/statements": post_statements}, res) as fn:
        resp = await fn.post(
            "/xapi/statements", json=[fresh, mine], headers={**token("a1", "admin", tenant), **_V}
        )
    assert resp.status_code == 409, resp.text
    assert "other statements were stored" in resp.json()["detail"]
    assert [s["index"] for s in resp.json()["statements"]] == [1]
    state = await res.store.load(tenant, "s25")
    assert state is not None
    assert (state.version, state.components[Component.QUIZ].mean) == (1, pytest.approx(0.2))
    assert await res.store.load(tenant, "s26") is not None
    dead = [
        m
        for m in read_to_end(settings, dlq_topic(XAPI_TOPIC))
        if headers_of(m).get("ce_id") == mine["id"]
    ]
    assert len(dead) == 1
    assert "differs from the one held" in headers_of(dead[0])["dlq_reason"]
    res.publisher = kafka
    await res.aclose()
    await other.aclose()

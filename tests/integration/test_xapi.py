"""xAPI intake against real Redis and the broker: POST /xapi/statements and mastery.xapi."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import orjson

from mastery.bootstrap import build
from mastery.events.codec import Record
from mastery.store import Outcome
from mastery.topics import XAPI_TOPIC, dlq_topic
from mastery.web import query_mastery
from mastery.web.xapi import post_statements
from tests.helpers import headers_of, read_to_end, xapi_statement
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
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
    await res.aclose()

"""``POST /process``: each intent answers what its dedicated function answers, enveloped."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import orjson
import pytest

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.topics import AUDIT_TOPIC
from mastery.web.process import process_intent
from tests.helpers import event_data, read_to_end, record
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from mastery.bootstrap import Resources
    from mastery.settings import Settings

DEDICATED = {
    "calculation": ("mastery-query", "/mastery/query"),
    "prediction": ("prediction", "/predictions/next-week"),
    "recommendations": ("recommendations", "/recommendations/adaptive"),
}


@pytest.fixture(scope="module")
async def school(settings: Settings) -> str:
    tenant = f"proc-{uuid.uuid4().hex[:8]}"
    res = build(settings, source="test")
    await res.ingestor.ingest(
        [
            record(c, event_data(tenant, "s1", 0.3 + 0.1 * i, class_id="c1"))
            for i, c in enumerate(Component)
        ]
    )
    await res.aclose()
    return tenant


async def _process(
    client: Callable[[str], httpx.AsyncClient], headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client("process").post("/process", json=body, headers=headers)


@pytest.mark.parametrize("intent", list(DEDICATED))
async def test_each_intent_answers_as_its_own_function(
    client: Callable[[str], httpx.AsyncClient], school: str, intent: str
) -> None:
    name, path = DEDICATED[intent]
    headers = token("s1", "student", school)
    direct = await client(name).post(path, json={"student_id": "s1"}, headers=headers)
    routed = await _process(client, headers, intent=intent, student_id="s1")
    assert direct.status_code == routed.status_code == 200, routed.text
    envelope = routed.json()
    assert set(envelope) == {"intent", "result", "error", "correlation_id"}
    assert (envelope["intent"], envelope["error"]) == (intent, None)
    assert envelope["correlation_id"] == routed.headers["x-correlation-id"]
    mine, theirs = direct.json(), envelope["result"]
    if intent == "prediction":  # the dedicated call filled the cache the routed one used
        assert (mine.pop("cached"), theirs.pop("cached")) == (False, True)
    assert theirs == mine


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"intent": "horoscope", "student_id": "s1"}, 422, "intent"),
        ({"student_id": "s1"}, 422, "intent"),
        ({"intent": "calculation"}, 422, "student_id"),
        ({"intent": "calculation", "student_id": "s1", "extra": 1}, 422, "extra"),
        ({"intent": "calculation", "student_id": "s2"}, 403, None),  # someone else
        ({"intent": "prediction", "student_id": "s1", "days": 3}, 422, "days"),
    ],
)
async def test_errors_come_in_the_envelope_as_problems(
    client: Callable[[str], httpx.AsyncClient],
    school: str,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    resp = await _process(client, token("s1", "student", school), **body)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["result"] is None
    assert doc["error"]["status"] == status
    assert doc["correlation_id"] == resp.headers["x-correlation-id"]
    if field:
        assert field in doc["detail"]
    assert doc["intent"] == (body["intent"] if body.get("intent") in DEDICATED else None)


async def test_without_a_token_the_envelope_says_401(
    client: Callable[[str], httpx.AsyncClient], school: str
) -> None:
    resp = await client("process").post(
        "/process", json={"intent": "calculation", "student_id": "s1"}
    )
    assert resp.status_code == 401
    assert resp.json()["intent"] is None
    assert resp.json()["error"]["title"] == "Unauthorized"


async def test_a_service_acts_for_a_user_and_the_audit_names_both(
    client: Callable[[str], httpx.AsyncClient], settings: Settings, school: str
) -> None:
    delegated = token("s1", "student", school, act={"sub": "tutor-bot"})
    resp = await _process(client, delegated, intent="calculation", student_id="s1")
    assert resp.status_code == 200
    refused = await _process(client, delegated, intent="calculation", student_id="s9")
    assert refused.status_code == 403  # the service gets no more than the user it acts for
    correlation = {resp.headers["x-correlation-id"], refused.headers["x-correlation-id"]}
    records = [orjson.loads(m.value() or b"{}") for m in read_to_end(settings, AUDIT_TOPIC)]
    mine = [r for r in records if r.get("correlation_id") in correlation]
    assert sorted((r["subject"], r["actor"], r["outcome"]) for r in mine) == [
        ("s1", "tutor-bot", "allowed"),
        ("s1", "tutor-bot", "denied"),
    ]


async def test_redis_down_is_a_503_envelope(redis_down: Resources, school: str) -> None:
    async with serve("process", {"POST /process": process_intent}, redis_down) as process:
        resp = await process.post(
            "/process",
            json={"intent": "recommendations", "student_id": "s1"},
            headers=token("s1", "student", school),
        )
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    # the rate limit, checked before the body is read, was the first to find Redis gone
    assert (resp.json()["intent"], resp.json()["error"]["status"]) == (None, 503)

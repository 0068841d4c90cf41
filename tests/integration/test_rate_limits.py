"""Rate limits are shared by every instance of a function: two instances, one Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from mastery.bootstrap import Resources, build
from mastery.domain import Component, Observation, StudentState
from mastery.web.compare import compare_cohort, comparison_of
from mastery.web.query import mastery_of, query_mastery
from mastery.web.recommendations import recommend_adaptive, recommendations_of
from mastery.web.requests import CompareRequest, QueryRequest, StudentRequest
from mastery.web.student import student_endpoint
from tests.conftest import JWT_SECRET
from tests.integration.conftest import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mastery.settings import Settings


def _instance(res: Resources) -> httpx.AsyncClient:
    """One function instance with its own Redis client, as a separate process would have."""
    return serve("mastery-query", {"POST /mastery/query": query_mastery}, res)


def _headers(sub: str, role: str, tenant: str, classes: list[str] | None = None) -> dict[str, str]:
    claims: dict[str, Any] = {"sub": sub, "role": role, "tenant": tenant}
    claims |= {"exp": int(time.time()) + 300, **({"classes": classes} if classes else {})}
    return {"authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


@pytest.fixture
async def instances(settings: Settings) -> AsyncIterator[list[httpx.AsyncClient]]:
    limited = settings.model_copy(update={"rate_limit_student": 5, "rate_limit_teacher": 8})
    resources = [build(limited), build(limited)]
    clients = [_instance(r) for r in resources]
    yield clients
    for c, r in zip(clients, resources, strict=True):
        await c.aclose()
        await r.aclose()


async def _ask(client: httpx.AsyncClient, headers: dict[str, str], student: str = "s1") -> Any:
    return await client.post("/mastery/query", json={"student_id": student}, headers=headers)


async def test_two_instances_share_one_limit(
    instances: list[httpx.AsyncClient], tenant: str
) -> None:
    student = _headers("s1", "student", tenant)
    answers = [await _ask(instances[i % 2], student) for i in range(7)]

    statuses = [a.status_code for a in answers]
    assert statuses == [404] * 5 + [429] * 2  # 404: no data yet; the limit counts anyway
    remaining = [int(a.headers["ratelimit-remaining"]) for a in answers[:5]]
    assert remaining == [4, 3, 2, 1, 0]
    refused = answers[5]
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 12  # one slot frees every 12 s
    assert refused.headers["ratelimit-limit"] == "5"


async def test_limits_are_per_caller_and_per_role(
    instances: list[httpx.AsyncClient], tenant: str
) -> None:
    for _ in range(5):
        await _ask(instances[0], _headers("s1", "student", tenant))
    assert (await _ask(instances[1], _headers("s1", "student", tenant))).status_code == 429
    # another student, the same student id in another school, a teacher: their own budgets
    assert (await _ask(instances[1], _headers("s2", "student", tenant), "s2")).status_code == 404
    assert (await _ask(instances[1], _headers("s1", "student", f"{tenant}-b"))).status_code == 404
    teacher = [await _ask(instances[i % 2], _headers("t1", "teacher", tenant)) for i in range(9)]
    assert [a.status_code for a in teacher].count(429) == 1
    assert teacher[0].headers["ratelimit-limit"] == "8"


async def test_unauthenticated_requests_are_not_counted(
    instances: list[httpx.AsyncClient], tenant: str
) -> None:
    for _ in range(10):
        assert (await _ask(instances[0], {"authorization": "Bearer junk"})).status_code == 401
    assert (await _ask(instances[0], _headers("s9", "student", tenant), "s9")).status_code == 404


async def test_refused_requests_count_and_the_limit_comes_first(
    instances: list[httpx.AsyncClient], tenant: str
) -> None:
    student = _headers("s1", "student", tenant)
    invalid = [
        await instances[0].post("/mastery/query", json={"student_id": 7}, headers=student),
        await _ask(instances[1], student, "s2"),  # another student's data: 403
    ]
    assert [a.status_code for a in invalid] == [422, 403]
    assert [a.headers["ratelimit-remaining"] for a in invalid] == ["4", "3"]
    for _ in range(3):
        await _ask(instances[0], student)
    # past the limit, a bad body and a forbidden student are 429 too, as a good request is
    late = [
        await instances[0].post("/mastery/query", json={"student_id": 7}, headers=student),
        await _ask(instances[1], student, "s2"),
        await _ask(instances[0], student),
    ]
    assert [a.status_code for a in late] == [429, 429, 429]


_READ_ALONG = {  # the endpoints whose state is read in the rate limit's Redis call
    "/mastery/query": ("mastery-query", query_mastery, QueryRequest, mastery_of, {}),
    "/analytics/compare": (
        "cohort-compare",
        compare_cohort,
        CompareRequest,
        comparison_of,
        {"scope": "school"},
    ),
    "/recommendations/adaptive": (
        "recommendations",
        recommend_adaptive,
        StudentRequest,
        recommendations_of,
        {},
    ),
}


@pytest.mark.parametrize("path", list(_READ_ALONG))
async def test_the_state_is_read_in_the_rate_limit_call(
    settings: Settings, tenant: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    name, handler, model, operation, extra = _READ_ALONG[path]
    res = build(settings)
    now = datetime.now(UTC)
    obs = Observation("e1", tenant, "s1", Component.QUIZ, 0.8, now, class_id="c1")
    await res.store.apply([(obs, b"{}")], [], now)
    reads: list[str] = []
    load = res.store.load

    async def counted(tenant: str, student: str) -> StudentState | None:
        reads.append(student)
        return await load(tenant, student)

    async def ask(headers: dict[str, str], student: str = "s1") -> httpx.Response:
        return await client.post(path, json={"student_id": student, **extra}, headers=headers)

    monkeypatch.setattr(res.store, "load", counted)
    try:
        plain = student_endpoint(model, operation)  # the same operation, reading on its own
        async with serve(name, {f"POST {path}": plain}, res) as client:
            read_after = await ask(_headers("s1", "student", tenant))
        assert reads == ["s1"]
        reads.clear()
        async with serve(name, {f"POST {path}": handler}, res) as client:
            own = await ask(_headers("s1", "student", tenant))
            teacher = await ask(_headers("t1", "teacher", tenant, ["c1"]))
            outsider = await ask(_headers("t2", "teacher", tenant, ["c2"]))
            nobody = await ask(_headers("s9", "student", tenant), "s9")
    finally:
        await res.aclose()
    assert own.status_code == 200, own.text
    assert own.json() == read_after.json()  # the state read along parses the same
    assert teacher.json() == own.json()
    assert outsider.status_code == 403  # decided on the classes of the state read along
    assert nobody.status_code == 404
    assert reads == []  # no second round trip: the state came with the rate limit's answer

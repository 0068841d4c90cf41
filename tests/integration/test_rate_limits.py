"""Rate limits are shared by every instance of a function: two instances, one Redis."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from mastery.bootstrap import Resources, build
from mastery.web import query_mastery
from tests.conftest import JWT_SECRET
from tests.integration.conftest import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mastery.settings import Settings


def _instance(res: Resources) -> httpx.AsyncClient:
    """One function instance with its own Redis client, as a separate process would have."""
    return serve("mastery-query", {"POST /mastery/query": query_mastery}, res)


def _headers(sub: str, role: str, tenant: str) -> dict[str, str]:
    claims = {"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + 300}
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

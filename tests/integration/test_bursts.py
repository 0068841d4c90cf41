"""A burst of requests waits for a Redis connection (bounded), never fails at once.

``MASTERY_REDIS_MAX_CONNECTIONS`` bounds a process's pool; past it a request waits for a
connection within the call's deadline (``MASTERY_REDIS_TIMEOUT_MS``), then gets a clean
503 with ``Retry-After``. Single node only: redis-py's cluster client has no waiting
pool (there a call past the bound fails at once, also a 503).
"""

from __future__ import annotations

import asyncio

import pytest

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.settings import Settings
from mastery.store.client import WaitingPool
from mastery.web.query import query_mastery
from tests.conftest import JWT_SECRET
from tests.helpers import event_data, record
from tests.integration.conftest import serve, token

ROUTES = {"POST /mastery/query": query_mastery}


@pytest.fixture
def single_node_settings(single_redis_url: str, kafka_servers: str) -> Settings:
    return Settings(
        redis_url=single_redis_url,
        kafka_bootstrap_servers=kafka_servers,
        jwt_secret=JWT_SECRET,
        redis_max_connections=2,
        redis_timeout_ms=500,
    )


async def test_a_burst_past_the_pool_waits_and_is_answered(
    single_node_settings: Settings, tenant: str
) -> None:
    res = build(single_node_settings)
    try:
        students = [f"s{i}" for i in range(40)]
        await res.ingestor.ingest(
            [record(Component.QUIZ, event_data(tenant, s, 0.5)) for s in students]
        )
        async with serve("mastery-query", ROUTES, res) as fn:
            answers = await asyncio.gather(
                *(
                    fn.post(
                        "/mastery/query",
                        json={"student_id": s},
                        headers=token(f"a{i}", "admin", tenant),
                    )
                    for i, s in enumerate(students)
                )
            )
    finally:
        await res.aclose()
    assert [a.status_code for a in answers] == [200] * len(students)


async def test_no_connection_within_the_deadline_is_503_with_retry_after(
    single_node_settings: Settings, tenant: str
) -> None:
    res = build(single_node_settings)
    pool = res.redis.connection_pool  # type: ignore[union-attr]
    try:
        await res.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s1", 0.5))])
        held = [await pool.get_connection() for _ in range(2)]
        async with serve("mastery-query", ROUTES, res) as fn:
            waited = await fn.post(
                "/mastery/query", json={"student_id": "s1"}, headers=token("a1", "admin", tenant)
            )
            for connection in held:
                await pool.release(connection)
            freed = await fn.post(
                "/mastery/query", json={"student_id": "s1"}, headers=token("a1", "admin", tenant)
            )
    finally:
        await res.aclose()
    assert waited.status_code == 503, waited.text
    assert waited.headers["content-type"] == "application/problem+json"
    assert int(waited.headers["retry-after"]) >= 1
    assert freed.status_code == 200, freed.text


async def test_waiters_are_served_in_arrival_order(single_redis_url: str) -> None:
    """A request arriving as a connection is released does not take it from one waiting
    longer (which would then queue again at the back: a burst's tail starves)."""
    pool = WaitingPool.from_url(single_redis_url, max_connections=1)
    order: list[str] = []

    async def take(name: str, hold_s: float) -> None:
        connection = await pool.get_connection()
        order.append(name)
        await asyncio.sleep(hold_s)
        await pool.release(connection)

    try:
        held = await pool.get_connection()
        first = asyncio.create_task(take("first", 0.01))
        await asyncio.sleep(0.01)  # first is waiting for the one connection
        await pool.release(held)  # wakes first, which has not run yet ...
        await take("late", 0)  # ... when a newcomer asks
        await first
    finally:
        await pool.aclose()
    assert order == ["first", "late"]

"""A Redis topology that does not match ``MASTERY_REDIS_CLUSTER`` is named at once.

A cluster client pointed at a single node: one line at start-up and a 503 ``/ready``
that says why. A single-node client pointed at a cluster node: a 503 (the node answers for
its own slots and redirects the rest), never a 500, with an error naming the setting.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

from mastery.bootstrap import build
from mastery.errors import Misconfigured
from mastery.settings import Settings
from mastery.web.query import query_mastery
from tests.conftest import JWT_SECRET
from tests.helpers import process_env
from tests.integration.conftest import serve, token


def test_a_cluster_client_on_a_single_node_is_one_line_and_exit_2(
    single_redis_url: str, kafka_servers: str
) -> None:
    settings = Settings(
        redis_url=single_redis_url, redis_cluster=True, kafka_bootstrap_servers=kafka_servers
    )
    argv = [sys.executable, "-m", "mastery.cli", "consume", "t", "--group", uuid.uuid4().hex]
    done = subprocess.run(argv, env=process_env(settings), capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mastery-consume: cannot start: redis: REDIS_URL is not a cluster")


async def test_a_cluster_client_on_a_single_node_is_not_ready(
    single_redis_url: str, kafka_servers: str
) -> None:
    settings = Settings(
        redis_url=single_redis_url,
        redis_cluster=True,
        kafka_bootstrap_servers=kafka_servers,
        jwt_secret=JWT_SECRET,
    )
    res = build(settings)
    try:
        async with serve("engine", {"POST /mastery/query": query_mastery}, res) as fn:
            answer = await fn.get("/ready")
    finally:
        await res.aclose()
    assert answer.status_code == 503
    assert "cluster" in answer.json()["checks"]["redis"].lower(), answer.text


async def test_a_single_client_on_a_cluster_node_answers_503_naming_the_setting(
    cluster_redis_url: str, kafka_servers: str
) -> None:
    settings = Settings(
        redis_url=cluster_redis_url, kafka_bootstrap_servers=kafka_servers, jwt_secret=JWT_SECRET
    )
    res = build(settings)
    tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(12)]  # spread over the masters
    try:
        async with serve("engine", {"POST /mastery/query": query_mastery}, res) as fn:
            answers = [
                await fn.post(
                    "/mastery/query", json={"student_id": "s1"}, headers=token("s1", "student", t)
                )
                for t in tenants
            ]
        refusals = []
        for t in tenants:
            try:
                await res.store.load(t, "s1")
            except Misconfigured as exc:
                refusals.append(str(exc))
    finally:
        await res.aclose()
    # Clients get a plain 503 (no internals); the error the logs show names the setting.
    assert {a.status_code for a in answers} <= {404, 503}, [a.text for a in answers]
    assert sum(a.status_code == 503 for a in answers) == len(refusals) > 0
    assert all("set MASTERY_REDIS_CLUSTER=true" in r for r in refusals), refusals

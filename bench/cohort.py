"""(e) ``POST /analytics/compare`` over a 100k-student school, next to the query, same run.

Seeds 100,000 students (classes of 30) through the store's apply path, so the cohort
indexes are built as in production, then runs the same open-loop load against
``mastery-query`` (the baseline) and ``cohort-compare`` (school and class scope).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import orjson

from bench._harness import ROOT, Row, percentile, pinned, progress
from bench._openloop import http_request
from bench.query import RATE, _open_loop, _serve, _token
from mastery.domain import Component, Observation
from mastery.store import RedisStore

if TYPE_CHECKING:
    from subprocess import Popen

    from bench._harness import Stack

__all__ = ["run"]

TENANT = "bench-school"  # the tokens of bench.query name it
STUDENTS, CLASS_SIZE, QUERIED = 100_000, 30, 1000
FUNCTIONS = ROOT / "functions"
TARGETS = {  # name -> (function, path, extra body)
    "query": ("mastery_query", "/mastery/query", {}),
    "compare, school": ("cohort_compare", "/analytics/compare", {"scope": "school"}),
    "compare, class": ("cohort_compare", "/analytics/compare", {"scope": "class"}),
}


async def run(stack: Stack) -> list[Row]:
    split = pinned()
    gen_cpus, server_cpus = split if split else (None, None)
    client = await stack.fresh_stores()
    progress(f"cohort: seeding {STUDENTS:,} students through the apply script")
    seeded = await _seed(RedisStore(client))
    used = int((await client.info("memory"))["used_memory"])
    await client.aclose()

    students = [f"s{i}" for i in range(0, STUDENTS, STUDENTS // QUERIED)]
    tokens = [_token(s) for s in students]
    servers: list[Popen[bytes]] = []
    latencies = {}
    with stack.redis_on(gen_cpus):
        try:
            ports = {
                d: await _serve(
                    stack, servers, d.replace("_", "-"), FUNCTIONS / d / "main.py", server_cpus
                )
                for d in {d for d, _, _ in TARGETS.values()}
            }
            for name, (directory, path, extra) in TARGETS.items():
                port = ports[directory]
                requests = [
                    http_request(
                        "POST",
                        f"127.0.0.1:{port}",
                        path,
                        {"Authorization": f"Bearer {t}", "Content-Type": "application/json"},
                        orjson.dumps({"student_id": s, **extra}),
                    )
                    for s, t in zip(students, tokens, strict=True)
                ]
                await _check(port, path, tokens[0], {"student_id": students[0], **extra})
                progress(f"cohort: open loop {RATE} req/s, {name} (one unmeasured round first)")
                # The first round on a process that has only answered a health check showed
                # P95s of a few hundred ms (cold caches under load); the steady state counts.
                await _open_loop(port, requests, gen_cpus)
                latencies[name] = (await _open_loop(port, requests, gen_cpus)).latencies
        finally:
            for proc in servers:
                stack.stop(proc)

    base = percentile(latencies["query"], 95) * 1e3
    rows = [
        Row(
            "cohort",
            f"seed {STUDENTS:,} students (1 event each, batches of 1,000)",
            f"{seeded:,.0f} events/s",
            "-",
            "-",
            "-",
            None,
        ),
        Row("cohort", "Redis memory with 100k students", f"{used / STUDENTS:,.0f} B/student"),
    ]
    for name in ("compare, school", "compare, class"):
        p95 = percentile(latencies[name], 95) * 1e3
        rows.append(
            Row(
                "cohort",
                f"{name}: P95 at {RATE} req/s, {STUDENTS // 1000}k students",
                f"{p95:.2f} ms",
                f"{base:.2f} ms (query)",
                f"{p95 / base:.2f}x",
                "< 10 ms",
                p95 < 10,
            )
        )
    return rows


async def _seed(store: RedisStore) -> float:
    now = datetime.now(UTC)
    rng = random.Random(7)
    components = list(Component)
    batch: list[tuple[Observation, bytes]] = []
    started = time.perf_counter()
    for n in range(STUDENTS):
        obs = Observation(
            event_id=f"cohort-{n}",
            tenant=TENANT,
            student_id=f"s{n}",
            component=components[n % 4],
            score=round(rng.random(), 3),
            occurred_at=now - timedelta(hours=1),
            class_id=f"c{n // CLASS_SIZE}",
        )
        batch.append((obs, b"{}"))
        if len(batch) == 1000:
            await store.apply(batch, [], now)
            batch.clear()
    if batch:
        await store.apply(batch, [], now)
    return STUDENTS / (time.perf_counter() - started)


async def _check(port: int, path: str, token: str, body: dict[str, object]) -> None:
    """The benchmark is void if the function answers errors fast: check one answer first."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")

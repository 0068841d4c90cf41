"""Batch runs through real Redis and Tansu: sync answers, the queue, the worker, its crashes.

Each test gets its own batch topics (``MASTERY_BATCH_TOPIC_PREFIX``) and consumer group,
so no test's worker sees another test's batches.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from mastery.batch.evaluate import error_result, stored_figures
from mastery.batch.runner import BatchRunner
from mastery.batch.worker import PriorityWorker
from mastery.bootstrap import build
from mastery.domain import Component, Observation
from mastery.domain.batch import Priority, StudentError, summarize
from mastery.events.kafka import create_topics
from mastery.logs import logger
from mastery.policy import Role
from mastery.ports import BatchRecord, BatchStatus
from mastery.store import keys
from mastery.topics import AUDIT_TOPIC, batch_topic, batch_topics, dlq_topic, with_dead_letters
from mastery.web.batch import batch_event, batch_status, submit_batch
from mastery.web.gdpr import erase_student, export_student
from mastery.web.query import query_mastery
from tests.fakes import FakeClock
from tests.helpers import headers_of, process_env, read_topic
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    import httpx
    from redis.asyncio import Redis

    from mastery.bootstrap import Resources
    from mastery.ports import Figures
    from mastery.settings import Settings
    from mastery.store.batches import BatchStore

ROUTES = {"POST /batch/mastery": submit_batch, "GET /batch/mastery/{batch_id}": batch_status}
#: How long past its deadline a running batch may still have a live worker
#: (``BatchRunner.grace``, with the default model).
GRACE = timedelta(minutes=5, seconds=30)


@pytest.fixture
async def res(settings: Settings) -> AsyncIterator[Resources]:
    """Resources with this test's own batch topics (and their DLQs)."""
    prefix = f"mb-{uuid.uuid4().hex[:8]}"
    mine = settings.model_copy(update={"batch_topic_prefix": prefix})
    create_topics(mine, [*with_dead_letters(batch_topics(prefix)), AUDIT_TOPIC])
    r = build(mine, source="test")
    yield r
    await r.aclose()


@pytest.fixture
async def api(res: Resources) -> AsyncIterator[httpx.AsyncClient]:
    async with serve("batch-mastery", ROUTES, res) as client:
        yield client


async def _seed(res: Resources, tenant: str, n: int, classes: int = 1) -> list[str]:
    """``n`` students with two events each, spread over ``classes`` classes c0, c1, ..."""
    now = datetime.now(UTC)
    rng = random.Random(n)
    batch = [
        (
            Observation(
                event_id=f"{tenant}-{i}-{c.value}",
                tenant=tenant,
                student_id=f"s{i}",
                component=c,
                score=round(rng.random(), 3),
                occurred_at=now - timedelta(hours=rng.randint(1, 200)),
                class_id=f"c{i % classes}",
            ),
            b"{}",
        )
        for i in range(n)
        for c in (Component.COMPLETION, Component.QUIZ)
    ]
    for i in range(0, len(batch), 1000):
        await res.store.apply(batch[i : i + 1000], [], now)
    return [f"s{i}" for i in range(n)]


def _admin(tenant: str) -> dict[str, str]:
    return token("a-1", "admin", tenant)


async def _queries(res: Resources, tenant: str, ids: list[str]) -> dict[str, Any]:
    """What ``POST /mastery/query`` answers an admin for each student (None: 404)."""
    out: dict[str, Any] = {}
    async with serve("mastery-query", {"POST /mastery/query": query_mastery}, res) as q:
        for s in ids:
            resp = await q.post("/mastery/query", json={"student_id": s}, headers=_admin(tenant))
            out[s] = resp.json() if resp.status_code == 200 else resp.status_code
    return out


async def _final(api: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        resp = await api.get(url, headers=headers)
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        if doc["status"] in ("done", "failed"):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch not final: {doc}")


async def _submit(
    api: httpx.AsyncClient, tenant: str, ids: list[str], priority: str = "normal", **extra: Any
) -> str:
    body = {"student_ids": ids, "priority": priority, "async": True, **extra}
    resp = await api.post("/batch/mastery", json=body, headers=_admin(tenant))
    assert resp.status_code == 202, resp.text
    location: str = resp.headers["location"]
    assert location == resp.json()["status_url"] == f"/batch/mastery/{resp.json()['batch_id']}"
    return location


def _not_found(student: str) -> bytes:
    """What an erasure stores in place of the student's result."""
    return orjson.dumps(error_result(student, StudentError.NOT_FOUND))


def _runner(res: Resources, **options: Any) -> BatchRunner:
    """A runner over the test's stores, with its own chunk size, clock or observer."""
    return BatchRunner(res.store, res.batches, res.model, **options)


class _Worker:
    """A ``PriorityWorker`` running in this process, stopped on exit."""

    def __init__(self, res: Resources, group: str, runner: BatchRunner | None = None) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(PriorityWorker(res, runner, group).run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if not self.task.done():
            await asyncio.wait_for(self.task, 30)


# -- synchronous ------------------------------------------------------------------------------


async def test_sync_batch_answers_what_each_query_answers(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 40, classes=2)
    wanted = [*ids, "ghost"]
    resp = await api.post("/batch/mastery", json={"student_ids": wanted}, headers=_admin(tenant))
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    expected = await _queries(res, tenant, wanted)

    assert [r["student_id"] for r in doc["results"]] == wanted
    for r in doc["results"][:-1]:
        assert r["result"] == expected[r["student_id"]]
    assert doc["results"][-1] == {
        "student_id": "ghost",
        "error": "not_found",
        "detail": "no mastery data for this student",
    }
    assert (doc["status"], doc["total"], doc["succeeded"], doc["failed"]) == ("done", 41, 40, 1)
    masteries = [expected[s]["mastery"] for s in ids]
    assert doc["summary"] == summarize(masteries).as_dict()


async def test_a_teacher_batch_reads_their_classes_and_marks_the_rest_forbidden(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 10, classes=2)  # s0, s2, ... in c0
    teacher = token("t-1", "teacher", tenant, classes=["c0"])
    resp = await api.post("/batch/mastery", json={"student_ids": ids}, headers=teacher)
    assert resp.status_code == 200, resp.text
    outcome = {r["student_id"]: r.get("error", "ok") for r in resp.json()["results"]}
    assert outcome == {s: "ok" if int(s[1:]) % 2 == 0 else "forbidden" for s in ids}
    assert (resp.json()["succeeded"], resp.json()["failed"]) == (5, 5)


async def test_students_may_not_run_or_read_batches(api: httpx.AsyncClient, tenant: str) -> None:
    student = token("s1", "student", tenant)
    resp = await api.post("/batch/mastery", json={"student_ids": ["s1"]}, headers=student)
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    resp = await api.get(f"/batch/mastery/{uuid.uuid4().hex}", headers=student)
    assert resp.status_code == 403


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        ([f"s{i}" for i in range(1001)], {"detail": "at most 1000 student ids per batch, got 1001"}),  # noqa: E501
        (["s1", "s2", "s1", "s3", "s2"], {"duplicate_ids": ["s1", "s2"]}),
        (["s1", "x:y", "s2", "{t}", ""], {"malformed_ids": [
            {"index": 1, "id": "x:y"}, {"index": 3, "id": "{t}"}, {"index": 4, "id": ""}]}),
    ],
    ids=["over-1000", "duplicates", "malformed"],
)  # fmt: skip
async def test_bad_id_lists_are_422_naming_the_ids(
    api: httpx.AsyncClient, tenant: str, ids: list[str], named: dict[str, Any]
) -> None:
    resp = await api.post("/batch/mastery", json={"student_ids": ids}, headers=_admin(tenant))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    for key, value in named.items():
        assert doc[key] == value


@pytest.mark.parametrize(
    "body",
    [
        {"student_ids": []},
        {"student_ids": ["s1", 2]},
        {"student_ids": "s1"},
        {"student_ids": ["s1"], "priority": "urgent"},
        {"student_ids": ["s1"], "async": "yes"},
        {"student_ids": ["s1"], "deadline_s": 0},
        {"student_ids": ["s1"], "extra": 1},
    ],
)
async def test_invalid_bodies_are_422(
    api: httpx.AsyncClient, tenant: str, body: dict[str, Any]
) -> None:
    resp = await api.post("/batch/mastery", json=body, headers=_admin(tenant))
    assert resp.status_code == 422, resp.text


async def test_the_python_name_of_async_is_an_unknown_field(
    api: httpx.AsyncClient, tenant: str
) -> None:
    body = {"student_ids": ["s1"], "run_async": True}
    resp = await api.post("/batch/mastery", json=body, headers=_admin(tenant))
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"] == [
        {"field": "run_async", "message": "Extra inputs are not permitted"}
    ]


async def test_the_longest_batch_fits_the_body_limit_pretty_printed(
    api: httpx.AsyncClient, tenant: str
) -> None:
    ids = [f"{i:04d}".ljust(64, "x") for i in range(1000)]  # the most, each the longest
    body = json.dumps({"student_ids": ids, "async": True}, indent=4).encode()
    assert len(body) == 76_048  # over the 74,096 bytes the limit was
    headers = {**_admin(tenant), "content-type": "application/json"}
    resp = await api.post("/batch/mastery", content=body, headers=headers)
    assert resp.status_code == 202, resp.text


# -- asynchronous: the topic and the worker ----------------------------------------------------


async def test_a_large_batch_goes_through_the_topic_and_the_worker(
    res: Resources, api: httpx.AsyncClient, tenant: str, redis: Redis
) -> None:
    ids = await _seed(res, tenant, 150)
    wanted = [*ids, "ghost"]
    resp = await api.post("/batch/mastery", json={"student_ids": wanted}, headers=_admin(tenant))
    assert resp.status_code == 202, resp.text  # over 100: asynchronous without asking
    url = resp.headers["location"]
    queued = (await api.get(url, headers=_admin(tenant))).json()
    assert (queued["status"], queued["processed"], queued["total"]) == ("queued", 0, 151)
    assert "results" not in queued
    batch_id = resp.json()["batch_id"]
    assert 0 < await redis.ttl(keys.batch(tenant, batch_id)) <= 86_400

    worker = _Worker(res, f"g-{tenant}")
    try:
        doc = await _final(api, url, _admin(tenant))
    finally:
        await worker.close()
    expected = await _queries(res, tenant, wanted)
    assert (doc["status"], doc["processed"], doc["progress"]) == ("done", 151, 1.0)
    assert (doc["succeeded"], doc["failed"]) == (150, 1)
    assert [r["student_id"] for r in doc["results"]] == wanted
    assert all(r["result"] == expected[r["student_id"]] for r in doc["results"][:-1])
    assert doc["results"][-1]["error"] == "not_found"
    assert doc["summary"] == summarize([expected[s]["mastery"] for s in ids]).as_dict()
    assert doc["started_at"] <= doc["finished_at"]
    assert 0 < await redis.ttl(keys.batch_results(tenant, batch_id)) <= 86_400


async def test_a_batch_no_worker_started_by_its_deadline_reads_as_failed(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    """Its message lost (a broker that restarted without it): no worker will fail it."""
    now_ms, ids = int(time.time() * 1000), ("s1", "s2", "ghost")
    record = BatchRecord(
        uuid.uuid4().hex,
        tenant,
        Priority.NORMAL,
        ids,
        "a-1",
        Role.ADMIN,
        frozenset(),
        submitted_at=now_ms - 120_000,
        deadline_at=now_ms - 60_000,
    )
    await res.batches.create(record)  # and nothing published
    url = f"/batch/mastery/{record.batch_id}"

    doc = (await api.get(url, headers=_admin(tenant))).json()
    assert (doc["status"], doc["total"], doc["processed"]) == ("failed", 3, 3)
    assert (doc["succeeded"], doc["failed"], doc["summary"]["count"]) == (0, 3, 0)
    assert doc["reason"] == "the deadline passed before a worker began"
    assert [(r["student_id"], r["error"]) for r in doc["results"]] == [(s, "timeout") for s in ids]
    assert (await api.get(url, headers=_admin(tenant))).json() == doc  # final in Redis
    late = await _runner(res).run(tenant, record.batch_id)  # the message, had it come late
    assert late.value == "already_final"


class _Killed(Exception):
    """The worker's process dies (SIGKILL, its node lost): nothing after this runs."""


async def _left_running(res: Resources, tenant: str, ids: list[str], deadline: datetime) -> str:
    """A batch of ``ids`` whose worker began it a minute before ``deadline``, stored its
    first chunk (10 students) and died; its message is lost. Its status URL."""
    deadline_ms = int(deadline.timestamp() * 1000)
    record = BatchRecord(
        uuid.uuid4().hex,
        tenant,
        Priority.NORMAL,
        tuple(ids),
        "a-1",
        Role.ADMIN,
        frozenset(),
        submitted_at=deadline_ms - 300_000,
        deadline_at=deadline_ms,
    )
    await res.batches.create(record)  # and nothing published

    async def killed(_: str, done: int) -> None:
        raise _Killed

    worker = _runner(
        res, chunk=10, clock=FakeClock(deadline - timedelta(minutes=1)), observer=killed
    )
    with pytest.raises(_Killed):
        await worker.run(tenant, record.batch_id)
    return f"/batch/mastery/{record.batch_id}"


async def test_a_batch_its_worker_left_running_reads_as_done_once_past_deadline_and_grace(
    res: Resources, api: httpx.AsyncClient, tenant: str, redis: Redis
) -> None:
    """A live worker checks the deadline before every chunk: one still running ``grace``
    past it has none, and would read running for 24 h. Within the grace it is left alone."""
    ids, now, admin = await _seed(res, tenant, 25), datetime.now(UTC), _admin(tenant)
    stopped = await _left_running(res, tenant, ids, now - GRACE - timedelta(minutes=1))
    recent = await _left_running(res, tenant, ids, now - timedelta(seconds=1))
    results = keys.batch_results(tenant, stopped.rsplit("/", 1)[1])
    earlier = await redis.hgetall(results)
    assert len(earlier) == 10

    within = (await api.get(recent, headers=admin)).json()
    assert (within["status"], within["processed"], within["total"]) == ("running", 10, 25)
    assert "results" not in within

    doc = (await api.get(stopped, headers=admin)).json()
    assert (doc["status"], doc["processed"], doc["total"]) == ("done", 25, 25)
    assert doc["reason"] == "the worker stopped before finishing"
    assert [r["student_id"] for r in doc["results"]] == ids
    assert [r.get("error") for r in doc["results"]] == [None] * 10 + ["timeout"] * 15
    expected = await _queries(res, tenant, ids[:10])
    assert all(r["result"] == expected[r["student_id"]] for r in doc["results"][:10])
    assert {k: v for k, v in (await redis.hgetall(results)).items() if k in earlier} == earlier
    assert (doc["succeeded"], doc["failed"]) == (10, 15)
    assert doc["summary"] == summarize([expected[s]["mastery"] for s in ids[:10]]).as_dict()
    times = [datetime.fromisoformat(doc[t]) for t in ("started_at", "deadline_at", "finished_at")]
    assert times == sorted(times)
    assert (await api.get(stopped, headers=admin)).json() == doc  # final in Redis
    late = await _runner(res).run(tenant, stopped.rsplit("/", 1)[1])  # its message, had it come
    assert late.value == "already_final"


async def test_a_worker_outliving_the_status_read_that_closed_its_batch_stores_nothing_more(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    """Its clock behind the reader's by more than the grace: after the read closed the
    batch it stores a chunk. Refused, and it stops: the figures stay the results'."""
    ids, admin = await _seed(res, tenant, 25), _admin(tenant)
    deadline = datetime.now(UTC) - GRACE - timedelta(minutes=1)
    url = await _left_running(res, tenant, ids, deadline)
    read: list[dict[str, Any]] = []

    async def status_read_after_each_chunk(_: str, done: int) -> None:
        read.append((await api.get(url, headers=admin)).json())

    clock = FakeClock(deadline - timedelta(minutes=1))  # the worker's, as it resumes
    worker = _runner(res, chunk=10, clock=clock, observer=status_read_after_each_chunk)
    assert (await worker.run(tenant, url.rsplit("/", 1)[1])).value == "already_final"
    assert [d["status"] for d in read] == ["done"]  # it stored one chunk, then was refused
    doc = (await api.get(url, headers=admin)).json()
    assert doc == read[0]
    assert [r.get("error") for r in doc["results"]] == [None] * 20 + ["timeout"] * 5
    assert (doc["succeeded"], doc["failed"], doc["processed"]) == (20, 5, 25)


async def test_high_priority_runs_before_normal_before_low(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 20)
    # All queued while no worker runs: the worker then meets them in one go.
    order = ["low", "normal", "low", "high", "low"]
    urls = [await _submit(api, tenant, ids, p) for p in order]
    worker = _Worker(res, f"g-{tenant}")
    try:
        docs = [await _final(api, url, _admin(tenant)) for url in urls]
    finally:
        await worker.close()
    by = {p: [d for d, q in zip(docs, order, strict=True) if q == p] for p in set(order)}
    [high], [normal] = by["high"], by["normal"]
    assert high["finished_at"] <= normal["started_at"]
    assert all(normal["finished_at"] <= low["started_at"] for low in by["low"])


async def test_a_running_low_batch_yields_to_a_high_one_and_resumes(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 400)
    low = await _submit(api, tenant, ids, "low")
    high_url: list[str] = []

    async def observer(batch_id: str, done: int) -> None:
        if low.endswith(batch_id) and not high_url:  # first chunk of the low batch
            high_url.append(await _submit(api, tenant, ids[:10], "high"))
        await asyncio.sleep(0.01)  # a slow low batch, so the high one arrives mid-way

    runner = _runner(res, chunk=5, observer=observer)
    worker = _Worker(res, f"g-{tenant}", runner)
    try:
        low_doc = await _final(api, low, _admin(tenant))
        high_doc = await _final(api, high_url[0], _admin(tenant))
    finally:
        await worker.close()
    assert low_doc["started_at"] < high_doc["started_at"]
    assert high_doc["finished_at"] <= low_doc["finished_at"]
    assert (low_doc["succeeded"], low_doc["failed"]) == (400, 0)
    assert [r["student_id"] for r in low_doc["results"]] == ids


@pytest.mark.parametrize(
    "victim_at",
    [
        5,  # in the first chunk: stored before the erasure, replaced by it
        15,  # in the second chunk: read (ahead) before the erasure, refused when stored
    ],
    ids=["stored-before", "read-before"],
)
async def test_a_student_erased_mid_batch_keeps_no_result_with_their_data(
    res: Resources, api: httpx.AsyncClient, tenant: str, victim_at: int
) -> None:
    ids = await _seed(res, tenant, 30)
    masteries = {s: r["mastery"] for s, r in (await _queries(res, tenant, ids)).items()}
    url = await _submit(api, tenant, ids)
    batch_id = url.rsplit("/", 1)[1]
    victim = ids[victim_at]

    async def erase_after_the_first_chunk(_: str, done: int) -> None:
        if done == 10:
            async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, res) as gdpr:
                body = {"student_id": victim}
                resp = await gdpr.post("/gdpr/erase", json=body, headers=_admin(tenant))
                assert resp.status_code == 200, resp.text

    runner = _runner(res, chunk=10, observer=erase_after_the_first_chunk)
    assert (await runner.run(tenant, batch_id)).value == "done"

    doc = (await api.get(url, headers=_admin(tenant))).json()
    by_id = {r["student_id"]: r for r in doc["results"]}
    assert by_id[victim]["error"] == "not_found"
    assert "result" not in by_id[victim]
    assert (doc["succeeded"], doc["failed"], len(doc["results"])) == (29, 1, 30)
    assert doc["summary"] == summarize([m for s, m in masteries.items() if s != victim]).as_dict()
    stored = await res.store.client.hget(keys.batch_results(tenant, batch_id), victim)
    assert stored is not None
    assert orjson.loads(stored) == by_id[victim]


async def test_an_erasure_after_a_batch_finished_leaves_not_found_in_its_results_and_figures(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids, admin = await _seed(res, tenant, 2), _admin(tenant)
    url = await _submit(api, tenant, ids)
    assert (await _runner(res).run(tenant, url.rsplit("/", 1)[1])).value == "done"
    before = (await api.get(url, headers=admin)).json()
    assert (before["succeeded"], before["summary"]["count"]) == (2, 2)

    async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, res) as gdpr:
        erased = await gdpr.post("/gdpr/erase", json={"student_id": "s0"}, headers=admin)
        assert erased.json()["batch_results_removed"] == 1, erased.text
        again = await gdpr.post("/gdpr/erase", json={"student_id": "s0"}, headers=admin)
        assert again.json()["batch_results_removed"] == 0  # nothing of theirs left
    doc = (await api.get(url, headers=admin)).json()
    assert (doc["status"], doc["total"], doc["processed"]) == ("done", 2, 2)
    assert doc["results"] == [
        {"student_id": "s0", "error": "not_found", "detail": "no mastery data for this student"},
        before["results"][1],
    ]
    assert (doc["succeeded"], doc["failed"]) == (1, 1)
    assert doc["summary"] == summarize([before["results"][1]["result"]["mastery"]]).as_dict()
    async with serve("gdpr-export", {"POST /gdpr/export": export_student}, res) as gdpr:
        export = await gdpr.post("/gdpr/export", json={"student_id": "s0"}, headers=admin)
    assert export.status_code == 404, export.text  # the batch holds nothing of theirs


async def test_results_of_students_erased_since_the_run_began_are_refused(
    res: Resources, tenant: str
) -> None:
    batches, now = res.batches, datetime.now(UTC)
    await res.store.erase(tenant, "long-ago", now - timedelta(hours=1))
    await res.store.erase(tenant, "just-now", now)
    since = int(now.timestamp() * 1000) - 60_000
    results = {"long-ago": b"1", "just-now": b"2", "never": b"3"}

    assert await batches.save_results(tenant, "b1", results, erased_since=since) == ["just-now"]
    stored = await res.store.client.hgetall(keys.batch_results(tenant, "b1"))
    assert stored == {b"long-ago": b"1", b"never": b"3"}
    assert await batches.save_results(tenant, "b1", {"just-now": b"4"}) == []  # no check
    assert await res.store.client.hget(keys.batch_results(tenant, "b1"), "just-now") == b"4"


def _meanwhile(settings: Settings, write: Callable[[BatchStore], Awaitable[object]]) -> None:
    """``write`` run to its end by another client, from inside a (synchronous) figures
    callback: a write landing between the read the figures come from and their write."""

    async def other() -> None:
        r = build(settings, source="test")
        try:
            await write(r.batches)
        finally:
            await r.aclose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, other()).result(30)


async def _scored_batch(res: Resources, tenant: str, masteries: dict[str, float]) -> None:
    now_ms = int(time.time() * 1000)
    ids = tuple(masteries)
    record = BatchRecord(
        "b1", tenant, Priority.NORMAL, ids, "a", Role.ADMIN, frozenset(), now_ms, now_ms + 60_000
    )
    await res.batches.create(record)
    docs = {s: {"student_id": s, "result": {"mastery": m}} for s, m in masteries.items()}
    await res.batches.save_results(tenant, "b1", {s: orjson.dumps(d) for s, d in docs.items()})


def _erasing_on_first_read(
    res: Resources, tenant: str, student: str, read: list[dict[str, bytes]]
) -> Callable[[Mapping[str, bytes]], Figures]:
    """Figures that keep each read of the results in ``read`` and, after the first, erase
    ``student`` from another connection: an erasure between the read and the write."""
    figures = partial(stored_figures, model=res.model)

    def erased_meanwhile(stored: Mapping[str, bytes]) -> Figures:
        read.append(dict(stored))
        if len(read) == 1:
            erase = _not_found(student)
            _meanwhile(res.settings, lambda b: b.forget(tenant, student, erase, figures))
        return figures(stored)

    return erased_meanwhile


async def test_final_figures_read_before_an_erasure_are_read_again(
    res: Resources, tenant: str
) -> None:
    await _scored_batch(res, tenant, {"s1": 0.9, "s2": 0.3})
    read: list[dict[str, bytes]] = []
    erased_meanwhile = _erasing_on_first_read(res, tenant, "s1", read)

    done = BatchStatus.DONE
    await res.batches.finish(tenant, "b1", status=done, finished_at=1, figures=erased_meanwhile)
    assert [r["s1"] == _not_found("s1") for r in read] == [False, True]
    record = await res.batches.get(tenant, "b1")
    assert record is not None
    assert (record.status, record.succeeded, record.failed) == (done, 1, 1)
    assert record.summary == summarize([0.3]).as_dict()


async def test_a_recount_read_before_another_erasure_is_read_again(
    res: Resources, tenant: str
) -> None:
    await _scored_batch(res, tenant, {"s1": 0.9, "s2": 0.3, "s3": 0.5})
    figures = partial(stored_figures, model=res.model)
    batches = res.batches
    await batches.finish(tenant, "b1", status=BatchStatus.DONE, finished_at=1, figures=figures)
    read: list[dict[str, bytes]] = []
    erased_meanwhile = _erasing_on_first_read(res, tenant, "s2", read)

    assert await batches.forget(tenant, "s1", _not_found("s1"), erased_meanwhile) == 1
    assert len(read) == 2
    record = await batches.get(tenant, "b1")
    assert record is not None
    assert (record.succeeded, record.failed) == (1, 2)
    assert record.summary == summarize([0.5]).as_dict()
    stored = await batches.results(tenant, "b1", ["s1", "s2", "s3"])
    assert stored[:2] == [_not_found("s1"), _not_found("s2")]


def _timeouts(students: tuple[str, ...]) -> dict[str, bytes]:
    return {s: orjson.dumps(error_result(s, StudentError.TIMEOUT)) for s in students}


async def _half_run_batch(res: Resources, tenant: str) -> tuple[str, ...]:
    """Batch b1 of s1, s2, s3, running, with s1's result stored (mastery 0.9)."""
    now_ms, ids = int(time.time() * 1000), ("s1", "s2", "s3")
    record = BatchRecord(
        "b1", tenant, Priority.NORMAL, ids, "a", Role.ADMIN, frozenset(), now_ms, now_ms + 60_000
    )
    await res.batches.create(record)
    assert await res.batches.start(tenant, "b1", now_ms) is BatchStatus.QUEUED
    await res.batches.save_results(tenant, "b1", {"s1": _scored("s1", 0.9)})
    return ids


def _scored(student: str, mastery: float) -> bytes:
    return orjson.dumps({"student_id": student, "result": {"mastery": mastery}})


async def test_a_chunk_stored_while_a_batch_is_closed_is_kept_and_counted(
    res: Resources, tenant: str
) -> None:
    """A slow worker's chunk lands between the closing's read and its write: read again,
    the chunk keeps its results (no ``timeout`` over them) and is counted once."""
    ids = await _half_run_batch(res, tenant)
    figures = partial(stored_figures, model=res.model)
    read: list[dict[str, bytes]] = []

    def chunk_meanwhile(stored: Mapping[str, bytes]) -> Figures:
        read.append(dict(stored))
        if len(read) == 1:
            chunk = {"s2": _scored("s2", 0.3)}
            _meanwhile(res.settings, lambda b: b.save_results(tenant, "b1", chunk))
        return figures(stored)

    closed = await _close_stopped(res, tenant, ids, chunk_meanwhile)
    assert closed is True
    assert [sorted(r) for r in read] == [list(ids), list(ids)]
    assert read[1]["s2"] == _scored("s2", 0.3)  # not the timeout the first read meant
    stored = await res.batches.results(tenant, "b1", ids)
    assert stored == [_scored("s1", 0.9), _scored("s2", 0.3), _timeouts(ids)["s3"]]
    record = await res.batches.get(tenant, "b1")
    assert record is not None
    assert (record.status, record.succeeded, record.failed, record.reason) == (
        BatchStatus.DONE,
        2,
        1,
        "stopped",
    )
    assert record.summary == summarize([0.9, 0.3]).as_dict()


async def _close_stopped(
    res: Resources,
    tenant: str,
    ids: Sequence[str],
    figures: Callable[[Mapping[str, bytes]], Figures],
) -> bool:
    """Batch b1 closed as a status read closes one whose worker stopped (finished at 1)."""
    return await res.batches.finish(
        tenant,
        "b1",
        status=BatchStatus.DONE,
        finished_at=1,
        figures=figures,
        reason="stopped",
        unreached=_timeouts(ids),
    )


async def test_a_worker_closing_a_batch_as_a_status_read_does_wins_once_and_holds(
    res: Resources, tenant: str
) -> None:
    """Its final write lands between the read's snapshot and write: the read writes
    nothing (the first closing wins), and no result is stored into the batch after."""
    ids = await _half_run_batch(res, tenant)
    figures = partial(stored_figures, model=res.model)
    read: list[dict[str, bytes]] = []
    worker_timeouts = _timeouts(ids[1:])

    def closed_meanwhile(stored: Mapping[str, bytes]) -> Figures:
        read.append(dict(stored))
        _meanwhile(
            res.settings,
            lambda b: b.finish(
                tenant,
                "b1",
                status=BatchStatus.DONE,
                finished_at=2,
                figures=figures,
                unreached=worker_timeouts,
            ),
        )
        return figures(stored)

    closed = await _close_stopped(res, tenant, ids, closed_meanwhile)
    assert (closed, len(read)) == (False, 1)
    record = await res.batches.get(tenant, "b1")
    assert record is not None
    assert (record.finished_at, record.reason, record.succeeded, record.failed) == (2, None, 1, 2)
    assert await res.batches.save_results(tenant, "b1", {"s3": _scored("s3", 0.5)}) is None
    again = await res.batches.finish(
        tenant, "b1", status=BatchStatus.DONE, finished_at=3, figures=figures
    )
    assert again is False
    stored = await res.batches.results(tenant, "b1", ids)
    assert stored == [_scored("s1", 0.9), worker_timeouts["s2"], worker_timeouts["s3"]]
    assert figures(dict(zip(ids, stored, strict=True))) == (1, 2, record.summary)


async def test_an_erasure_reaches_a_batch_that_finished_a_day_after_it_was_submitted(
    res: Resources, tenant: str
) -> None:
    """Its results live a day from its last write: the live index, which an erasure reads,
    must know it as long, not a day from its submission."""
    batches, now_ms = res.batches, int(time.time() * 1000)
    day = 86_400_000

    def submitted(batch_id: str, at: int) -> BatchRecord:
        return BatchRecord(
            batch_id, tenant, Priority.LOW, ("s1",), "a", Role.ADMIN, frozenset(), at, at + day
        )

    await batches.create(submitted("late", now_ms - day - 60_000))
    await batches.save_results(tenant, "late", {"s1": b"{}"})
    figures = partial(stored_figures, model=res.model)
    await batches.finish(
        tenant, "late", status=BatchStatus.DONE, finished_at=now_ms, figures=figures
    )
    await batches.create(submitted("next", now_ms))  # prunes the index of what is gone
    assert await batches.forget(tenant, "s1", _not_found("s1"), figures) == 1
    assert await res.store.client.hgetall(keys.batch_results(tenant, "late")) == {
        b"s1": _not_found("s1")
    }


async def test_an_erasure_reaches_a_batch_that_never_finished_a_day_after_it_was_submitted(
    res: Resources, tenant: str
) -> None:
    """Queued a day, then run by a worker that died mid-batch, its status never read: its
    results live a day from their last write, and the live index must know it as long
    (it was pruned a day after the submission, and the erasure missed the results)."""
    batches, now_ms = res.batches, int(time.time() * 1000)
    day = 86_400_000

    def submitted(batch_id: str, at: int) -> BatchRecord:
        return BatchRecord(
            batch_id, tenant, Priority.LOW, ("s1",), "a", Role.ADMIN, frozenset(), at, at + day
        )

    await batches.create(submitted("stuck", now_ms - day + 60_000))
    await batches.save_results(tenant, "stuck", {"s1": b"{}"})  # and never finished
    await batches.create(submitted("next", now_ms + 120_000))  # prunes the index
    figures = partial(stored_figures, model=res.model)
    assert await batches.forget(tenant, "s1", _not_found("s1"), figures) == 1
    assert await res.store.client.hgetall(keys.batch_results(tenant, "stuck")) == {
        b"s1": _not_found("s1")
    }


async def test_a_worker_cancelled_mid_batch_resumes_without_redoing_students(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 300)
    url = await _submit(api, tenant, ids)
    crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def crash_after_three(_: str, done: int) -> None:
        if done == 30:
            crashed.set_result(None)
            raise asyncio.CancelledError  # dies mid-batch: no final status, no commit

    first = _Worker(res, f"g-{tenant}", _runner(res, chunk=10, observer=crash_after_three))
    await asyncio.wait_for(crashed, 60)
    with pytest.raises(asyncio.CancelledError):
        await first.task
    mid = (await api.get(url, headers=_admin(tenant))).json()
    assert (mid["status"], mid["processed"]) == ("running", 30)

    redone: list[int] = []

    async def count(_: str, done: int) -> None:
        redone.append(done)

    second = _Worker(res, f"g-{tenant}", _runner(res, chunk=10, observer=count))
    try:
        doc = await _final(api, url, _admin(tenant))
    finally:
        await second.close()
    assert redone[-1] == 270  # only the students without a result
    assert (doc["status"], doc["succeeded"], doc["failed"]) == ("done", 300, 0)
    assert [r["student_id"] for r in doc["results"]] == ids


async def test_a_worker_killed_mid_batch_resumes_and_every_result_is_there_once(
    res: Resources, api: httpx.AsyncClient, tenant: str, redis: Redis
) -> None:
    ids = await _seed(res, tenant, 1000)
    url = await _submit(api, tenant, ids)
    batch_id = url.rsplit("/", 1)[1]
    s = res.settings
    env = process_env(s, MASTERY_BATCH_TOPIC_PREFIX=s.batch_topic_prefix, MASTERY_BATCH_CHUNK="2")
    argv = [sys.executable, "-m", "mastery.cli", "batch-worker", "--group", f"g-{tenant}"]
    results = keys.batch_results(tenant, batch_id)

    first = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 60
        while await redis.hlen(results) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)  # no chance to finish or commit
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = await redis.hlen(results)
    assert 0 < killed_at < len(ids), "the kill must land mid-batch"

    second = subprocess.Popen(argv, env=env)
    try:
        doc = await _final(api, url, _admin(tenant))
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert (doc["status"], doc["succeeded"], doc["failed"], doc["processed"]) == (
        "done",
        1000,
        0,
        1000,
    )
    assert [r["student_id"] for r in doc["results"]] == ids
    expected = await _queries(res, tenant, ids[:50])
    assert all(r["result"] == expected[r["student_id"]] for r in doc["results"][:50])


# -- who reads a batch --------------------------------------------------------------------------


async def test_only_its_tenant_and_submitter_read_a_batch(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 3)
    teacher = token("t-1", "teacher", tenant, classes=["c0"])
    resp = await api.post(
        "/batch/mastery", json={"student_ids": ids, "async": True}, headers=teacher
    )
    assert resp.status_code == 202
    url = resp.headers["location"]

    def status(headers: dict[str, str]) -> Awaitable[httpx.Response]:
        return api.get(url, headers=headers)

    assert (await status(teacher)).status_code == 200
    assert (await status(_admin(tenant))).status_code == 200  # admins see the tenant's batches
    other_teacher = token("t-2", "teacher", tenant, classes=["c0"])
    elsewhere = _admin(f"other-{tenant}")
    for headers in (other_teacher, elsewhere):
        resp = await status(headers)
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
    for bad in ("nope", "../x", "A" * 32, uuid.uuid4().hex):
        assert (await api.get(f"/batch/mastery/{bad}", headers=teacher)).status_code == 404


# -- the HTTP entry of the batch-worker function (KafkaSource, kafka-connector) ---------------


async def test_batch_worker_function_runs_a_delivered_batch_and_dead_letters_garbage(
    res: Resources, api: httpx.AsyncClient, tenant: str
) -> None:
    ids = await _seed(res, tenant, 5)
    url = await _submit(api, tenant, ids, "high")
    batch_id = url.rsplit("/", 1)[1]
    body = orjson.dumps({"tenant": tenant, "batch_id": batch_id})
    headers = {
        "ce-specversion": "1.0",
        "ce-id": batch_id,
        "ce-type": "mastery.batch.v1",
        "ce-source": "test",
        "content-type": "application/json",
    }
    async with serve("batch-worker", {"POST /": batch_event}, res, uses_auth=False) as fn:
        resp = await fn.post("/", content=body, headers=headers)
        assert resp.json() == {"outcome": "done", "batch_id": batch_id}
        again = await fn.post("/", content=body, headers=headers)  # a redelivery
        assert again.json()["outcome"] == "already_final"
        topic = batch_topic(res.settings.batch_topic_prefix, Priority.LOW)
        stream = io.StringIO()
        handler = logger("batch-worker")._logger.handlers[0]  # type: ignore[attr-defined]
        before = handler.setStream(stream)
        try:
            poison = await fn.post("/", content=b"garbage", headers={**headers, "x-topic": topic})
        finally:
            handler.setStream(before)
        assert poison.json()["outcome"] == "rejected"
        [logged] = [
            orjson.loads(line)
            for line in stream.getvalue().splitlines()
            if orjson.loads(line)["message"] == "event dead-lettered"
        ]
        assert (logged["topic"], logged["reason_class"]) == (topic, "malformed")
    doc = (await api.get(url, headers=_admin(tenant))).json()
    assert (doc["status"], doc["succeeded"]) == ("done", 5)
    [dead] = read_topic(res.settings, dlq_topic(topic), expected=1)
    assert headers_of(dead)["dlq_reason"].startswith("malformed")

"""prediction, recommendations and mastery-history over HTTP, against real Redis and Tansu."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from mastery.bootstrap import build
from mastery.domain import Component, explain
from mastery.events.consumer import consume
from mastery.ports import Record
from mastery.store import RedisStore, keys
from mastery.web.history import mastery_history_report
from mastery.web.prediction import predict_next_week
from tests.helpers import event_data, fresh_topics, produce, record
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from redis.asyncio import Redis

    from mastery.bootstrap import Resources
    from mastery.settings import Settings

PREDICT, RECOMMEND, HISTORY = (
    "/predictions/next-week",
    "/recommendations/adaptive",
    "/analytics/mastery-history",
)
NOW = datetime.now(UTC)


@pytest.fixture
async def res(settings: Settings) -> AsyncIterator[Resources]:
    resources = build(settings, source="test")
    yield resources
    await resources.aclose()


def _auth(tenant: str, sub: str = "a1", role: str = "admin") -> dict[str, str]:
    return token(sub, role, tenant)


async def _events(
    res: Resources, tenant: str, student: str, scores: dict[Component, float], days_ago: int = 0
) -> None:
    at = NOW - timedelta(days=days_ago, minutes=1)
    await res.ingestor.ingest(
        [record(c, event_data(tenant, student, s, at=at, class_id="c1")) for c, s in scores.items()]
    )


async def _declining(res: Resources, tenant: str, student: str) -> None:
    """Three weeks of daily events, a little worse each day (one record a day, oldest first)."""
    for back in range(20, -1, -1):
        score = 0.2 + 0.03 * back
        await _events(res, tenant, student, dict.fromkeys(Component, score), days_ago=back)


async def test_prediction_is_cached_until_a_new_event(
    client: Callable[[str], httpx.AsyncClient], res: Resources, redis: Redis, tenant: str
) -> None:
    await _declining(res, tenant, "s1")
    fn = client("prediction")
    first = await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["cached"] is False
    assert doc["trend"] == "declining"
    assert doc["history"]["days_with_data"] == 21
    assert doc["history"]["to"] == NOW.date().isoformat()
    assert doc["predicted_for"] == (NOW.date() + timedelta(days=7)).isoformat()
    assert doc["intervention_needed"] is True
    assert doc["intervention_reason"].startswith(("forecast mastery", "expected to fall"))
    assert doc["version"] == 21 * 4
    ttl = await redis.ttl(keys.prediction(tenant, "s1"))
    assert 3500 < ttl <= 3600

    second = await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))
    assert second.json() == {**doc, "cached": True}

    await _events(res, tenant, "s1", {Component.QUIZ: 1.0})
    third = (await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))).json()
    assert third["cached"] is False
    assert third["version"] == doc["version"] + 1
    assert third["current_mastery"] > doc["current_mastery"]
    fourth = (await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))).json()
    assert fourth == {**third, "cached": True}


@pytest.mark.parametrize(
    "entry",
    [
        b"{not json",
        # this state's and today's, but not the answer's shape (another release's): a miss,
        # not an answer that breaks its document
        orjson.dumps(
            {"stamp": "STAMP", "day": NOW.date().isoformat(), "doc": {"student_id": "s1", "old": 1}}
        ),
    ],
)
async def test_a_corrupt_cache_entry_is_a_miss(
    client: Callable[[str], httpx.AsyncClient],
    res: Resources,
    redis: Redis,
    tenant: str,
    entry: bytes,
) -> None:
    await _events(res, tenant, "s1", {Component.QUIZ: 0.5})
    days = await res.store.days_of(tenant, "s1")
    assert days is not None
    ours = entry.replace(b"STAMP", days.stamp.encode())  # the state's own stamp
    await redis.set(keys.prediction(tenant, "s1"), ours, ex=60)
    fn = client("prediction")
    resp = await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))
    assert resp.status_code == 200
    assert resp.json()["cached"] is False
    again = await fn.post(PREDICT, json={"student_id": "s1"}, headers=_auth(tenant))
    assert again.json()["cached"] is True


class _ErasedBeforeTheCacheWrite(RedisStore):
    """The race, in order: ``meanwhile`` (an erasure, new events) runs after a request has
    read the student and made its answer, before its answer-cache write."""

    meanwhile: Callable[[], Awaitable[None]] | None = None

    async def cache(
        self,
        key_of: Callable[[str, str], str],
        tenant: str,
        entries: Sequence[tuple[str, str, bytes]],
        ttl_s: int,
    ) -> None:
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            await run()
        await super().cache(key_of, tenant, entries, ttl_s)


@pytest.mark.parametrize(
    ("path", "route", "key_of", "made_from"),
    [
        (PREDICT, predict_next_week, keys.prediction, lambda doc: doc["current_mastery"]),
        (HISTORY, mastery_history_report, keys.history, lambda doc: doc["series"]),
    ],
    ids=["prediction", "history"],
)
async def test_an_answer_made_before_an_erasure_is_not_cached_at_the_same_version_after_it(
    res: Resources,
    redis: Redis,
    tenant: str,
    path: str,
    route: Any,
    key_of: Callable[[str, str], str],
    made_from: Callable[[dict[str, Any]], object],
) -> None:
    """A request reads the student at version 2 and makes its answer from their data; the
    student is erased and new events bring a fresh record to version 2 again (the version
    restarts after an erasure); the request's cache write must not store the erased
    student's answer for the next reader (found by a security reviewer)."""
    await _events(res, tenant, "s1", {Component.QUIZ: 0.1, Component.COMPLETION: 0.1}, days_ago=3)
    store = _ErasedBeforeTheCacheWrite(
        res.redis, res.model, res.settings.audit_maxlen, res.settings.redis_timeout_ms / 1000
    )

    async def erase_and_enrol_again() -> None:
        await store.erase(tenant, "s1", NOW - timedelta(days=1))  # before the new events
        await _events(res, tenant, "s1", {Component.QUIZ: 0.9, Component.COMPLETION: 0.9})

    store.meanwhile = erase_and_enrol_again
    res.store = store
    async with serve("race", {f"POST {path}": route}, res) as fn:
        old = await fn.post(path, json={"student_id": "s1"}, headers=_auth(tenant))
        assert old.status_code == 200, old.text
        fresh = await store.days_of(tenant, "s1")
        assert fresh is not None
        assert old.json()["version"] == fresh.version == 2  # the race's premise
        assert await redis.get(key_of(tenant, "s1")) is None  # the erased answer: not kept

        new = await fn.post(path, json={"student_id": "s1"}, headers=_auth(tenant))
    assert new.json()["version"] == 2
    assert made_from(new.json()) != made_from(old.json())  # made from the new events
    assert await redis.exists(key_of(tenant, "s1")) == 1  # and that one is kept


async def test_recommendations_rank_the_gaps(
    client: Callable[[str], httpx.AsyncClient], res: Resources, tenant: str
) -> None:
    await _events(res, tenant, "s1", {Component.COMPLETION: 0.5, Component.QUIZ: 0.9})
    await res.ingestor.ingest(
        [record(Component.QUALITY, event_data(tenant, "s1", 0.3, area="code_quality"))]
    )
    fn = client("recommendations")
    resp = await fn.post(RECOMMEND, json={"student_id": "s1"}, headers=_auth(tenant))
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    got = [(r["component"], r["area"], r["action"], r["priority"]) for r in doc["recommendations"]]
    assert got == [
        ("completion", None, "practice", "high"),  # 0.4 * 0.2 = 0.08
        ("quality", None, "refactor", "high"),  # 0.2 * 0.4 = 0.08
        ("quality", "code_quality", "refactor", "high"),
        ("consistency", None, "schedule", "high"),  # never observed: 0.1 * 0.7
    ]
    assert doc["recommendations"][3]["observed"] is False
    assert all(r["estimated_minutes"] > 0 and r["reason"] for r in doc["recommendations"])

    await _events(res, tenant, "s2", dict.fromkeys(Component, 0.95))
    done = (await fn.post(RECOMMEND, json={"student_id": "s2"}, headers=_auth(tenant))).json()
    assert done["recommendations"] == []
    assert "nothing below 0.70" in done["message"]


async def test_a_newest_first_backfill_reads_like_the_same_events_in_time_order(
    client: Callable[[str], httpx.AsyncClient],
    settings: Settings,
    res: Resources,
    redis: Redis,
    tenant: str,
) -> None:
    """A platform importing three weeks of past activity newest first, through the broker
    and ``mastery consume``, gives the history and prediction of the same events in order."""
    [topic] = fresh_topics(settings, "backfill")
    rng = random.Random(16)
    past = []
    for back in range(20, -1, -1):  # oldest first
        at = NOW - timedelta(days=back, minutes=5)
        for c in rng.sample(list(Component), rng.randint(1, 4)):
            past.append(
                (f"{back}-{c}", c, round(0.3 + 0.025 * abs(10 - back) + rng.random() / 10, 3), at)
            )

    def records(student: str, events: list[tuple[str, Component, float, datetime]]) -> list[Record]:
        return [
            record(c, event_data(tenant, student, s, at=at), event_id=f"{student}-{i}", topic=topic)
            for i, c, s, at in events
        ]

    produce(settings, records("in-order", past) + records("backfill", past[::-1]))
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            versions = [
                await redis.hget(keys.state(tenant, s), "version") for s in ("in-order", "backfill")
            ]
            if versions == [str(len(past)).encode()] * 2:
                break
            await asyncio.sleep(0.1)
        assert versions == [str(len(past)).encode()] * 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    answers = {}
    for student in ("in-order", "backfill"):
        body = {"student_id": student, "days": 30}
        history = await client("mastery-history").post(HISTORY, json=body, headers=_auth(tenant))
        body = {"student_id": student}
        prediction = await client("prediction").post(PREDICT, json=body, headers=_auth(tenant))
        assert history.status_code == prediction.status_code == 200, (history.text, prediction.text)
        answers[student] = [
            {k: v for k, v in doc.json().items() if k != "student_id"}
            for doc in (history, prediction)
        ]
    assert answers["backfill"] == answers["in-order"]
    [history, prediction] = answers["backfill"]
    assert len(history["series"]) == 21  # one point a day, not one for the whole import
    assert prediction["history"]["days_with_data"] == 21


async def test_history_in_every_format(
    client: Callable[[str], httpx.AsyncClient], res: Resources, tenant: str
) -> None:
    for back, score in ((40, 0.2), (10, 0.4), (3, 0.6), (0, 0.8)):
        await _events(res, tenant, "s1", dict.fromkeys(Component, score), days_ago=back)
    fn = client("mastery-history")
    body = {"student_id": "s1", "days": 30}
    as_json = await fn.post(HISTORY, json=body, headers=_auth(tenant))
    assert as_json.status_code == 200, as_json.text
    doc = as_json.json()
    assert (doc["granularity"], doc["to"]) == ("day", NOW.date().isoformat())
    assert [b["days"] for b in doc["series"]] == [1, 1, 1]  # day -40 is outside 30 days
    masteries = [b["mastery"] for b in doc["series"]]
    assert masteries == sorted(masteries)
    assert doc["summary"]["count"] == 3
    assert doc["summary"]["first"] == masteries[0]
    assert doc["summary"]["change"] == pytest.approx(masteries[-1] - masteries[0], abs=1e-4)
    assert doc["trend"] == "improving"
    assert doc["series"][0]["components"]["quiz"] is not None

    as_csv = await fn.post(HISTORY, json={**body, "format": "csv"}, headers=_auth(tenant))
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [float(r["mastery"]) for r in rows] == masteries
    assert set(rows[0]) == {"student_id", "start", "end", "days", "mastery", *map(str, Component)}

    as_ndjson = await fn.post(HISTORY, json={**body, "format": "ndjson"}, headers=_auth(tenant))
    assert as_ndjson.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in as_ndjson.text.splitlines()]
    assert [line["mastery"] for line in lines] == masteries
    assert all(line["student_id"] == "s1" for line in lines)

    monthly = await fn.post(
        HISTORY, json={**body, "days": 90, "granularity": "month"}, headers=_auth(tenant)
    )
    assert sum(b["days"] for b in monthly.json()["series"]) == 4


async def test_history_and_export_fold_with_the_configured_half_life(
    settings: Settings, tenant: str
) -> None:
    """MASTERY_HALF_LIFE_DAYS=7: the history (and the export's) must say what the query
    says, not fold the days with the default 14-day half-life."""
    res = build(settings.model_copy(update={"half_life_days": 7.0}), source="test")
    await _events(res, tenant, "s1", {Component.QUIZ: 0.2}, days_ago=10)
    await _events(res, tenant, "s1", {Component.QUIZ: 0.9})
    state = await res.store.load(tenant, "s1")
    assert state is not None
    quiz = explain(state, res.model).components[Component.QUIZ].score
    assert quiz == pytest.approx((0.2 * 2 ** (-10 / 7) + 0.9) / (2 ** (-10 / 7) + 1), abs=1e-3)
    route = f"POST {HISTORY}"
    async with serve("mastery-history", {route: mastery_history_report}, res) as fn:
        answer = await fn.post(
            HISTORY, json={"student_id": "s1", "days": 30}, headers=_auth(tenant)
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["series"][-1]["components"]["quiz"] == pytest.approx(quiz, abs=1e-3)
    exported = await res.store.history(tenant, "s1")
    assert exported[-1].scores[Component.QUIZ] == pytest.approx(quiz, abs=1e-3)
    await res.aclose()


async def test_the_json_history_is_served_from_its_cache_until_state_day_or_range_change(
    client: Callable[[str], httpx.AsyncClient], res: Resources, redis: Redis, tenant: str
) -> None:
    """The answer is kept after a line naming the state version, day and range it was
    made for; a different range or a new event is answered afresh (and kept instead)."""
    await _events(res, tenant, "s1", dict.fromkeys(Component, 0.5), days_ago=2)
    fn = client("mastery-history")
    body = {"student_id": "s1", "days": 30}
    first = await fn.post(HISTORY, json=body, headers=_auth(tenant))
    assert first.status_code == 200, first.text
    entry = await redis.get(keys.history(tenant, "s1"))
    days = await res.store.days_of(tenant, "s1")
    assert days is not None
    tag = f"{days.stamp} {NOW.date().isoformat()} 30 day\n".encode()
    assert entry == tag + first.content
    assert 0 < await redis.ttl(keys.history(tenant, "s1")) <= 3600

    await redis.set(keys.history(tenant, "s1"), tag + b'{"from":"the cache"}', ex=60)
    cached = await fn.post(HISTORY, json=body, headers=_auth(tenant))
    assert (cached.status_code, cached.json()) == (200, {"from": "the cache"})
    assert cached.headers["content-type"] == first.headers["content-type"]

    weekly = await fn.post(HISTORY, json={**body, "granularity": "week"}, headers=_auth(tenant))
    assert weekly.json()["granularity"] == "week"  # another range: made, and kept instead
    assert (await redis.get(keys.history(tenant, "s1"))).startswith(tag.replace(b"day", b"week"))
    await redis.set(keys.history(tenant, "s1"), tag + b'{"from":"the cache"}', ex=60)
    await _events(res, tenant, "s1", {Component.QUIZ: 0.9})
    fresh = await fn.post(HISTORY, json=body, headers=_auth(tenant))
    assert fresh.json()["version"] == first.json()["version"] + 1
    assert len(fresh.json()["series"]) == 2  # today's event: a day of its own


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"days": 6}, "days"),
        ({"days": 91}, "days"),
        ({"days": "many"}, "days"),
        ({"granularity": "hour"}, "granularity"),
        ({"format": "xml"}, "format"),
        ({"since": "2026-01-01"}, "since"),
    ],
)
async def test_history_names_the_bad_field(
    client: Callable[[str], httpx.AsyncClient], tenant: str, body: dict[str, object], field: str
) -> None:
    fn = client("mastery-history")
    resp = await fn.post(HISTORY, json={"student_id": "s1", **body}, headers=_auth(tenant))
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in resp.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("name", "path"),
    [("prediction", PREDICT), ("recommendations", RECOMMEND), ("mastery-history", HISTORY)],
)
async def test_unknown_student_is_404_and_bad_bodies_are_422(
    client: Callable[[str], httpx.AsyncClient], tenant: str, name: str, path: str
) -> None:
    fn = client(name)
    missing = await fn.post(path, json={"student_id": "nobody"}, headers=_auth(tenant))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    extra = await fn.post(path, json={"student_id": "s1", "x": 1}, headers=_auth(tenant))
    assert extra.status_code == 422
    assert "x" in extra.json()["detail"]
    assert (await fn.post(path, json={"student_id": "s1"})).status_code == 401

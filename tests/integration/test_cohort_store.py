"""Cohort indexes, erasure and tombstones of the Redis store, against a real Redis.

Every figure the store answers is checked against a brute-force computation over the
states it holds, with the domain's own definition of the indexed units.
"""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis

from mastery.domain import DEFAULT_MODEL, Component, Observation, ScoringModel, StudentState, fold
from mastery.domain.cohort import METRICS, UNITS, compare, index_units, percentile
from mastery.domain.scoring import day_number
from mastery.store import Outcome, RedisStore, keys
from tests.helpers import keys_of_student

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CLASSES = ("c-a", "c-b", "c-c")


def _events(tenant: str, seed: int, students: int, per_student: int) -> list[Observation]:
    rng = random.Random(seed)
    out = []
    for s in range(students):
        classes = rng.sample(CLASSES, rng.choice((1, 1, 2)))
        skill = rng.random()
        for i in range(per_student):
            out.append(
                Observation(
                    event_id=f"{seed}-{s}-{i}",
                    tenant=tenant,
                    student_id=f"s{s}",
                    component=rng.choice(list(Component)),
                    score=round(min(1.0, max(0.0, rng.gauss(skill, 0.2))), 2),
                    occurred_at=NOW - timedelta(days=rng.uniform(0, 60)),
                    class_id=classes[i % len(classes)],
                )
            )
    return out


async def _apply(
    store: RedisStore, events: list[Observation], now: datetime = NOW
) -> list[Outcome]:
    audit = [
        (o, orjson.dumps({"event_id": o.event_id, "student_id": o.student_id})) for o in events
    ]
    return (await store.apply(audit, [], now)).outcomes


async def _cohorts(
    store: RedisStore, tenant: str, students: list[str]
) -> dict[str | None, dict[str, tuple[int, ...]]]:
    """class (None: the tenant) -> student -> units, from the states the store holds."""
    cohorts: dict[str | None, dict[str, tuple[int, ...]]] = {None: {}}
    for student in students:
        state = await store.load(tenant, student)
        if state is None:
            continue
        units = index_units(state, DEFAULT_MODEL)
        cohorts[None][student] = units
        for c in state.classes:
            cohorts.setdefault(c, {})[student] = units
    return cohorts


async def _assert_indexes_match(
    store: RedisStore, redis: Redis, tenant: str, students: list[str]
) -> None:
    cohorts = await _cohorts(store, tenant, students)
    tenant_wide = cohorts[None]
    for i, metric in enumerate(METRICS):
        indexed = await redis.zrange(keys.tenant_index(tenant, metric), 0, -1, withscores=True)
        assert {m.decode(): int(v) for m, v in indexed} == {s: u[i] for s, u in tenant_wide.items()}
        total = await redis.hget(keys.tenant_sum(tenant), metric)
        assert int(total or 0) == sum(u[i] for u in tenant_wide.values()), metric
    for class_id in CLASSES:
        indexed = await redis.hgetall(keys.class_index(tenant, class_id))
        members = {m.decode(): tuple(int(u) for u in v.split(b",")) for m, v in indexed.items()}
        assert members == cohorts.get(class_id, {}), class_id


def _brute_force(
    members: dict[str, tuple[int, ...]], student: str, i: int
) -> tuple[float, float, float]:
    values = [u[i] for u in members.values()]
    mine = members[student][i]
    below = sum(v < mine for v in values)
    equal = sum(v == mine for v in values)
    return (
        statistics.mean(values) / UNITS,
        statistics.median(values) / UNITS,
        percentile(below, equal, len(values)),
    )


async def test_indexes_hold_every_student_once_with_exact_sums(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    events = _events(tenant, seed=1, students=40, per_student=6)
    await _apply(store, events[:100])
    await _apply(store, events[100:])
    await _apply(store, _events(tenant, seed=2, students=40, per_student=3))  # students move
    await _assert_indexes_match(store, redis, tenant, [f"s{s}" for s in range(40)])


async def test_lua_units_are_the_domains(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    await _apply(store, _events(tenant, seed=3, students=30, per_student=5))
    for s in range(30):
        state = await store.load(tenant, f"s{s}")
        assert state is not None
        score = await redis.zscore(keys.tenant_index(tenant, "mastery"), f"s{s}")
        assert int(score or -1) == index_units(state, DEFAULT_MODEL)[0]


@pytest.mark.parametrize("scope", [None, "c-a"])
async def test_comparison_matches_brute_force(redis: Redis, tenant: str, scope: str | None) -> None:
    store = RedisStore(redis)
    students = [f"s{s}" for s in range(50)]
    await _apply(store, _events(tenant, seed=4, students=50, per_student=4))
    members = (await _cohorts(store, tenant, students))[scope]
    for student in list(members)[:15]:
        size, figures = await store.compare(tenant, scope, student, NOW)
        assert size == len(members)
        assert figures is not None
        result = compare(size, figures)
        assert result.metrics is not None
        for i, metric in enumerate(METRICS):
            mean, median, pct = _brute_force(members, student, i)
            got = result.metrics[metric]
            assert result.student[metric] == members[student][i] / UNITS
            assert got.mean == pytest.approx(mean, abs=1e-4)
            assert got.median == pytest.approx(median, abs=1e-9)
            assert got.percentile == pytest.approx(pct, abs=0.05)


async def test_a_non_member_gets_no_figures(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    await _apply(store, _events(tenant, seed=5, students=5, per_student=2))
    size, figures = await store.compare(tenant, None, "nobody", NOW)
    assert (size, figures) == (5, None)
    _, figures = await store.compare(tenant, "c-a", "nobody", NOW)
    assert figures is None


async def test_erasure_leaves_no_key_and_no_index_entry(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    students = [f"s{s}" for s in range(20)]
    events = _events(tenant, seed=6, students=20, per_student=5)
    await _apply(store, events)
    assert await keys_of_student(redis, tenant, "s3")

    deleted, _ = await store.erase(tenant, "s3", NOW)
    assert deleted >= 3  # state, days, at least one seen bucket
    assert await keys_of_student(redis, tenant, "s3") == []
    for key in [k async for k in redis.scan_iter(match=f"m:{{{tenant}}}:cohort:*")]:
        if await redis.type(key) == b"zset":
            assert await redis.zscore(key, "s3") is None, key
        elif key != keys.tenant_sum(tenant).encode():
            assert not await redis.hexists(key, "s3"), key
    assert await redis.hget(keys.tenant_prefix(tenant) + "cohort:classes", "s3") is None
    await _assert_indexes_match(store, redis, tenant, students)

    assert await store.erase(tenant, "s3", NOW) == (0, NOW)  # idempotent
    assert await store.erase(tenant, "never-seen", NOW) == (0, NOW)


async def test_erasure_finds_what_a_longer_window_kept(redis: Redis, tenant: str) -> None:
    """Seen buckets written under a 300-day ``MASTERY_RETENTION_DAYS`` outlive a window
    shortened to 90 days since: the export shows them and the erasure deletes them."""
    longer = RedisStore(redis, ScoringModel(window=timedelta(days=300)))
    old = Observation("old-1", tenant, "s1", Component.QUIZ, 0.5, NOW - timedelta(days=250))
    assert await _apply(longer, [old]) == [Outcome.APPLIED]
    store = RedisStore(redis)  # the default 90-day window
    _, hashes = await store.bookkeeping(tenant, "s1", NOW)
    assert hashes == [keys.event_hash("old-1")]
    await store.erase(tenant, "s1", NOW)
    assert await keys_of_student(redis, tenant, "s1") == []


async def test_replayed_events_of_an_erased_student_bring_nothing_back(
    redis: Redis, tenant: str
) -> None:
    store = RedisStore(redis)
    events = [e for e in _events(tenant, seed=7, students=3, per_student=6)]
    await _apply(store, events)
    await store.erase(tenant, "s1", NOW)

    replay = await _apply(store, events, NOW + timedelta(minutes=1))
    assert [o for e, o in zip(events, replay, strict=True) if e.student_id == "s1"] == [
        Outcome.ERASED
    ] * 6
    assert await keys_of_student(redis, tenant, "s1") == []
    assert await redis.zscore(keys.tenant_index(tenant, "mastery"), "s1") is None
    audit = await redis.xrevrange(keys.audit(tenant), count=len(events))
    assert sum(f[b"outcome"] == b"erased" for _, f in audit) == 6

    later = Observation("after", tenant, "s1", Component.QUIZ, 0.9, NOW + timedelta(minutes=2))
    assert await _apply(store, [later], NOW + timedelta(minutes=3)) == [Outcome.APPLIED]
    state = await store.load(tenant, "s1")
    assert state is not None
    assert state.version == 1  # a fresh start, nothing of before


async def test_expired_students_leave_the_indexes(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    old = Observation("old", tenant, "gone", Component.QUIZ, 0.5, NOW, class_id="c-a")
    await _apply(store, [old])
    later = NOW + timedelta(days=91)
    await redis.delete(keys.state(tenant, "gone"))  # what the key's TTL does by then
    fresh = Observation("fresh", tenant, "here", Component.QUIZ, 0.7, later, class_id="c-a")
    await _apply(store, [fresh], later)

    assert await redis.zrange(keys.tenant_index(tenant, "mastery"), 0, -1) == [b"here"]
    assert int(await redis.hget(keys.tenant_sum(tenant), "quiz") or 0) == 7000
    assert list(await redis.hgetall(keys.class_index(tenant, "c-a"))) == [b"here"]
    assert await redis.zrange(keys.active(tenant), 0, -1) == [b"here"]


async def test_a_comparison_prunes_expired_students_first(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    batch = [Observation(f"e{i}", tenant, f"s{i}", Component.QUIZ, i / 10, NOW) for i in range(6)]
    await _apply(store, batch)
    size, _ = await store.compare(tenant, None, "s1", NOW + timedelta(days=89))
    assert size == 6
    size, figures = await store.compare(tenant, None, "s1", NOW + timedelta(days=91))
    assert (size, figures) == (0, None)


async def test_a_class_named_like_the_tenant_scope_is_still_a_class(
    redis: Redis, tenant: str
) -> None:
    store = RedisStore(redis)
    batch = [
        Observation(
            f"e{i}", tenant, f"s{i}", Component.QUIZ, i / 10, NOW, class_id="t" if i < 2 else "x"
        )
        for i in range(6)
    ]
    await _apply(store, batch)
    assert (await store.compare(tenant, "t", "s1", NOW))[0] == 2
    assert (await store.compare(tenant, None, "s1", NOW))[0] == 6


def _class_event(tenant: str, student: str, class_id: str, days_ago: float, i: int) -> Observation:
    return Observation(
        event_id=f"{student}-{class_id}-{i}",
        tenant=tenant,
        student_id=student,
        component=Component.QUIZ,
        score=0.5,
        occurred_at=NOW - timedelta(days=days_ago),
        class_id=class_id,
    )


async def _classes_index(redis: Redis, tenant: str, student: str) -> set[str]:
    """The classes whose index holds the student, and what the tenant's list says."""
    listed = await redis.hget(keys.tenant_prefix(tenant) + "cohort:classes", student)
    held = {c for c in CLASSES if await redis.hexists(keys.class_index(tenant, c), student)}
    assert set((listed or b"").decode().split(",")) - {""} == held
    return held


@pytest.mark.parametrize("order", ["in-time-order", "newest-first"])
async def test_a_student_who_moved_leaves_the_old_class(
    redis: Redis, tenant: str, order: str
) -> None:
    """Events in c-a 60 to 40 days ago, then in c-b from 35 days ago: once c-b's span
    reaches the lapse (30 days) past c-a's last, c-a's teachers no longer see the student,
    whatever order the events arrive in."""
    store = RedisStore(redis)
    old = [_class_event(tenant, "s1", "c-a", ago, i) for i, ago in enumerate(range(60, 39, -5))]
    new = [_class_event(tenant, "s1", "c-b", ago, i) for i, ago in enumerate(range(35, 4, -5))]
    batches = [old, new[:3], new[3:]]  # the last reaches 10 days ago: 30 past c-a's last
    for batch in batches if order == "in-time-order" else batches[::-1]:
        await _apply(store, batch)
    state = await store.load(tenant, "s1")
    assert state is not None
    assert state.classes == {"c-b"}
    assert await _classes_index(redis, tenant, "s1") == {"c-b"}
    await _assert_indexes_match(store, redis, tenant, ["s1"])


async def test_a_class_within_the_lapse_is_kept(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    await _apply(store, [_class_event(tenant, "s1", "c-a", 40, 0)])
    await _apply(store, [_class_event(tenant, "s1", "c-b", 11, 0)])  # 29 days after
    assert await _classes_index(redis, tenant, "s1") == {"c-a", "c-b"}


async def test_classes_stored_by_the_script_are_folds_in_any_batching(
    redis: Redis, tenant: str
) -> None:
    """The script keeps exactly the classes (and their days) the domain's fold keeps, the
    events applied in shuffled batches of random sizes; the indexes follow."""
    rng = random.Random(5)
    students = [f"s{s}" for s in range(12)]
    events = [
        _class_event(tenant, s, rng.choice(CLASSES), rng.uniform(0, 89), i)
        for s in students
        for i in range(rng.randint(1, 10))
    ]
    rng.shuffle(events)
    start = 0
    while start < len(events):
        size = rng.randint(1, 15)
        await _apply(store := RedisStore(redis), events[start : start + size])
        start += size
    for s in students:
        want = fold(StudentState(), [e for e in events if e.student_id == s])
        got = await store.load(tenant, s)
        assert got is not None
        assert got.class_days == want.class_days, s
        assert await _classes_index(redis, tenant, s) == want.classes
    await _assert_indexes_match(store, redis, tenant, students)


async def test_classes_written_before_their_days_were_kept_are_read_and_lapse(
    redis: Redis, tenant: str
) -> None:
    """A state whose classes field has no days (``c-a,c-b``): each counts as of the
    student's last event; the next event 30 days later in c-b drops c-a."""
    store = RedisStore(redis)
    await _apply(store, [_class_event(tenant, "s1", "c-a", 40, 0)])
    await _apply(store, [_class_event(tenant, "s1", "c-b", 40, 0)])
    state_key = keys.state(tenant, "s1")
    await redis.hset(state_key, "classes", "c-a,c-b")
    before = await store.load(tenant, "s1")
    assert before is not None
    assert before.classes == {"c-a", "c-b"}
    await _apply(store, [_class_event(tenant, "s1", "c-b", 10, 1)])
    assert await _classes_index(redis, tenant, "s1") == {"c-b"}
    assert (
        await redis.hget(state_key, "classes") == f"c-b:{day_number(NOW.timestamp()) - 10}".encode()
    )

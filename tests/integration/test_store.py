"""The Lua apply script against a real Redis: idempotency, order independence, TTLs, audit."""

from __future__ import annotations

import random
import uuid
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis

from mastery.bootstrap import Resources
from mastery.domain import (
    Component,
    Observation,
    StudentState,
    day_activity,
    end_of_day,
    explain,
    fold,
)
from mastery.errors import Unavailable
from mastery.store import Outcome, RedisStore, keys

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _obs(tenant: str, student: str, i: int, *, days_ago: float = 0.0, **kw: object) -> Observation:
    rng = random.Random(i)
    return Observation(
        event_id=f"e-{i}",
        tenant=tenant,
        student_id=student,
        component=kw.pop("component", rng.choice(list(Component))),  # type: ignore[arg-type]
        score=kw.pop("score", round(rng.random(), 3)),  # type: ignore[arg-type]
        occurred_at=NOW - timedelta(days=days_ago or rng.uniform(0, 60)),
        **kw,  # type: ignore[arg-type]
    )


def _audit(obs: Observation) -> bytes:
    return orjson.dumps({"event_id": obs.event_id, "student_id": obs.student_id})


async def _apply(store: RedisStore, batch: list[Observation], now: datetime = NOW) -> list[Outcome]:
    return (await store.apply([(o, _audit(o)) for o in batch], [], now)).outcomes


async def test_state_matches_the_pure_domain(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    events = [
        _obs(tenant, "s1", i, area="algebra" if i % 3 else None, class_id="c1") for i in range(40)
    ]
    assert await _apply(store, events) == [Outcome.APPLIED] * 40

    state = await store.load(tenant, "s1")
    expected = fold(StudentState(), events)
    assert state is not None
    assert state.version == 40
    assert state.classes == {"c1"}
    assert explain(state) == explain(expected)
    for key, agg in expected.areas.items():
        assert state.areas[key].count == agg.count
        assert state.areas[key].mean == pytest.approx(agg.mean, abs=1e-12)


async def test_any_order_and_batching_gives_the_same_state(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    events = [_obs(tenant, "a", i) for i in range(60)]
    await _apply(store, events)
    rng = random.Random(7)
    shuffled = [
        Observation(o.event_id, o.tenant, "b", o.component, o.score, o.occurred_at) for o in events
    ]
    rng.shuffle(shuffled)
    for start in range(0, 60, 7):  # uneven batches, reversed within each
        await _apply(store, shuffled[start : start + 7][::-1])

    a, b = await store.load(tenant, "a"), await store.load(tenant, "b")
    assert a is not None
    assert b is not None
    assert explain(a) == explain(b)
    assert a.version == b.version == 60


async def test_duplicates_count_once_even_within_a_batch(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    unique = [_obs(tenant, "s1", i) for i in range(100)]
    rng = random.Random(3)
    stream = unique + rng.sample(unique, 30)  # 30 % duplicates, some in the same batch
    rng.shuffle(stream)

    outcomes = [
        o
        for start in range(0, len(stream), 25)
        for o in await _apply(store, stream[start : start + 25])
    ]

    assert outcomes.count(Outcome.APPLIED) == 100
    assert outcomes.count(Outcome.DUPLICATE) == 30
    state = await store.load(tenant, "s1")
    assert state is not None
    assert state.version == 100
    assert explain(state) == explain(fold(StudentState(), unique))


async def test_every_key_has_a_ttl(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    await _apply(store, [_obs(tenant, f"s{i}", i, days_ago=i) for i in range(20)])
    await store.apply([], [(tenant, Outcome.REJECTED, "bad", b"{}")], NOW)

    found = [k async for k in redis.scan_iter(match=f"m:{{{tenant}*")]
    assert found
    for key in found:
        ttl = await redis.ttl(key)
        assert ttl > 0, f"{key!r} has no TTL"
    assert 0 < await redis.ttl(keys.state(tenant, "s0")) <= 90 * 86400


async def test_day_records_one_per_day_trimmed_to_the_window(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    start = NOW - timedelta(days=119)
    events = []
    for day in range(120):  # one event a day for 120 days, applied on that day
        at = start + timedelta(days=day)
        obs = Observation(f"d{day}", tenant, "s1", Component.QUIZ, day / 120, at)
        await _apply(store, [obs], now=at)
        events.append(obs)
        if day % 10 == 0:  # a second event the same day joins that day's record
            again = Observation(f"d{day}b", tenant, "s1", Component.COMPLETION, 1.0, at)
            await _apply(store, [again], now=at)
            events.append(again)

    days = await store.history(tenant, "s1")
    assert [d.day for d in days] == [(NOW - timedelta(days=89 - i)).date() for i in range(90)]
    kept = [o for o in events if o.occurred_at.date() >= days[0].day]
    assert days == end_of_day(day_activity(kept))
    state = await store.load(tenant, "s1")
    assert state is not None
    # The state still holds the 30 older days, faded to at most 2**(-90/14) ~ 1.2 % each.
    assert days[-1].scores[Component.QUIZ] == pytest.approx(
        explain(state).components[Component.QUIZ].score, abs=0.01
    )
    assert days[-1].scores[Component.QUALITY] is None  # never observed
    assert days[-1].scores[Component.COMPLETION] == 1.0


async def test_day_records_are_the_domains_whatever_the_arrival_order(
    redis: Redis, tenant: str
) -> None:
    """apply.lua adds up the day records mastery.domain.days computes: newest first, in
    time order, shuffled into batches, or redelivered, each event lands in its own day."""
    rng = random.Random(16)
    events = [_obs(tenant, "s1", i, days_ago=rng.uniform(0, 80)) for i in range(120)]
    store = RedisStore(redis)
    newest_first = sorted(events, key=lambda o: o.occurred_at, reverse=True)
    for o in newest_first:  # one at a time: a backfill importing the past, newest first
        await _apply(store, [o])
    shuffled = [replace(o, student_id="s2") for o in events]
    rng.shuffle(shuffled)
    for k in range(0, len(shuffled), 17):
        await _apply(store, shuffled[k : k + 17])
    await _apply(store, shuffled[:30])  # redelivered: duplicates change nothing

    expected = day_activity(events)
    assert len(expected) > 50
    for student in ("s1", "s2"):
        found = await store.days_of(tenant, student)
        assert found is not None
        assert found.activity == expected
        assert await store.history(tenant, student) == end_of_day(expected)


async def test_a_student_with_thousands_of_areas_in_one_call(redis: Redis, tenant: str) -> None:
    """The student's sums are read and written in chunks: Lua's unpack holds about 8,000
    values, and a script that failed for it after marking the events seen lost them all
    (their redelivery was a duplicate)."""
    store = RedisStore(redis)
    events = [_obs(tenant, "s1", i, area=f"area-{i}", days_ago=1) for i in range(1_400)]
    assert await _apply(store, events) == [Outcome.APPLIED] * 1_400
    state = await store.load(tenant, "s1")
    assert state is not None
    expected = fold(StudentState(), events)
    assert explain(state) == explain(expected)
    assert {k: a.count for k, a in state.areas.items()} == {
        k: a.count for k, a in expected.areas.items()
    }
    assert len(state.areas) == 1_400


async def test_an_answer_cached_after_an_erasure_is_not_kept(redis: Redis, tenant: str) -> None:
    """A request that read the student before the erasure and caches its answer after it
    must not leave the erased student's answer behind (an hour, the cache's TTL)."""
    store = RedisStore(redis)
    await _apply(store, [_obs(tenant, "s1", 1), _obs(tenant, "s2", 2)])
    read = await store.days_of(tenant, "s1")
    assert read is not None
    await store.erase(tenant, "s1", NOW)
    await store.cache(keys.prediction, tenant, [("s1", read.stamp, b"{}")], 60)
    assert await redis.exists(keys.prediction(tenant, "s1")) == 0
    other = await store.days_of(tenant, "s2")
    assert other is not None
    await store.cache(keys.prediction, tenant, [("s2", other.stamp, b"{}")], 60)
    assert await redis.get(keys.prediction(tenant, "s2")) == b"{}"
    later = replace(other, version=other.version + 1)
    await store.cache(keys.prediction, tenant, [("s2", later.stamp, b"[]")], 60)
    assert await redis.get(keys.prediction(tenant, "s2")) == b"{}"  # not from another version


async def test_a_student_enrolled_again_is_another_state_at_the_same_version(
    redis: Redis, tenant: str
) -> None:
    """The version restarts after an erasure; the stamp an answer is cached for does not
    repeat: an answer read before the erasure is not stored once new events have brought
    the fresh record back to its version."""
    store = RedisStore(redis)
    await _apply(store, [_obs(tenant, "s1", 1, days_ago=3)])
    read = await store.days_of(tenant, "s1")
    await store.erase(tenant, "s1", NOW - timedelta(days=2))
    assert await _apply(store, [_obs(tenant, "s1", 2, days_ago=1)]) == [Outcome.APPLIED]
    again = await store.days_of(tenant, "s1")
    assert read is not None
    assert again is not None
    assert (read.version, again.version) == (1, 1)
    assert "" not in (read.born, again.born)
    assert read.stamp != again.stamp
    await store.cache(keys.prediction, tenant, [("s1", read.stamp, b"erased")], 60)
    assert await redis.exists(keys.prediction(tenant, "s1")) == 0
    await store.cache(keys.prediction, tenant, [("s1", again.stamp, b"{}")], 60)
    assert await redis.get(keys.prediction(tenant, "s1")) == b"{}"
    await _apply(store, [_obs(tenant, "s1", 3, days_ago=1)])
    later = await store.days_of(tenant, "s1")
    assert later is not None
    assert (later.version, later.born) == (2, again.born)  # born once, at its creation


async def test_audit_trail_records_every_outcome(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    first = _obs(tenant, "s1", 1)
    await _apply(store, [first])
    unapplied = [
        (tenant, Outcome.REJECTED, "invalid field score", b'{"event_id":"x"}'),
        (tenant, Outcome.IGNORED, "verb maps to no component", b'{"event_id":"y"}'),
    ]
    await store.apply([(first, _audit(first))], unapplied, NOW)

    entries = await redis.xrange(keys.audit(tenant))
    outcomes = [(f[b"outcome"].decode(), f.get(b"reason")) for _, f in entries]
    assert outcomes == [
        ("applied", None),
        ("duplicate", None),
        ("rejected", b"invalid field score"),
        ("ignored", b"verb maps to no component"),
    ]
    assert orjson.loads(entries[0][1][b"event"])["event_id"] == "e-1"


@pytest.mark.parametrize("tenants", [1, 2], ids=["one call, alone", "two calls, pipelined"])
async def test_script_is_reloaded_after_a_flush(redis: Redis, tenant: str, tenants: int) -> None:
    store = RedisStore(redis)
    await redis.script_flush()
    events = [_obs(f"{tenant}-{t}", "s1", 1) for t in range(tenants)]
    assert await _apply(store, events) == [Outcome.APPLIED] * tenants


async def test_unknown_student_has_no_state(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    assert await store.load(tenant, f"nobody-{uuid.uuid4().hex[:6]}") is None
    assert await store.history(tenant, "nobody") == []


async def test_read_ahead_hands_out_each_chunk_with_what_load_many_reads(
    redis: Redis, tenant: str
) -> None:
    store = RedisStore(redis)
    students = [f"s{i}" for i in range(7)]
    await _apply(store, [_obs(tenant, s, i, class_id="c1") for i, s in enumerate(students)])
    ids = [*students, f"nobody-{uuid.uuid4().hex[:6]}"]
    chunks = [ids[:3], ids[3:6], ids[6:]]
    await redis.script_flush()  # a raw EVAL per chunk: no script needs loading first

    got = [(part, states) async for part, states in store.read_ahead(tenant, chunks)]

    assert [part for part, _ in got] == chunks
    expected = await store.load_many(tenant, ids)
    assert [state for _, states in got for state in states] == expected
    assert all(s is not None and s.classes == {"c1"} for s in expected[:-1])
    assert expected[-1] is None


async def test_read_ahead_stopped_early_leaves_the_client_answering_right(
    redis: Redis, tenant: str
) -> None:
    store = RedisStore(redis)
    await _apply(store, [_obs(tenant, "a", 1), _obs(tenant, "b", 2, class_id="cb")])
    probe = keys.tenant_prefix(tenant) + "probe"
    for i in range(5):  # each time, the read of ["b"] is in flight when the reader stops
        async with aclosing(store.read_ahead(tenant, [["a"], ["b"]])) as reads:
            async for part, _ in reads:
                assert part == ["a"]
                break
        assert await redis.incr(probe) == i + 1  # not the dropped read's reply
        await redis.expire(probe, 60)
    states = await store.load_many(tenant, ["b", "a"])
    assert [s.classes if s else None for s in states] == [{"cb"}, frozenset()]


async def test_read_ahead_without_redis_is_unavailable(redis_down: Resources) -> None:
    with pytest.raises(Unavailable):
        async for _ in redis_down.store.read_ahead("t", [["a"], ["b"]]):
            pass


async def test_scan_walks_every_page_on_every_master(redis: Redis, tenant: str) -> None:
    store = RedisStore(redis)
    # Keys of many hash slots: on a cluster they fall on every master.
    names = [f"m:{{{tenant}-{i}}}:scanned" for i in range(45)]
    for name in names:
        await redis.set(name, 1, ex=60)
    found = await store.scan(f"m:{{{tenant}-*}}:scanned", count=10)
    assert sorted(k.decode() if isinstance(k, bytes) else k for k in found) == sorted(names)


async def test_reading_offsets_without_redis_is_unavailable(redis_down: Resources) -> None:
    with pytest.raises(Unavailable):
        await redis_down.store.read_offsets("g")

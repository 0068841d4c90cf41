"""``mastery consume`` against real Tansu and Redis: batches, DLQ, duplicates, crashes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Message, TopicPartition
from confluent_kafka.aio import AIOConsumer
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from mastery.bootstrap import build
from mastery.cli.rebuild import rebuild
from mastery.dev import servers
from mastery.domain import Component, Observation
from mastery.domain.days import DAY_MAX
from mastery.errors import Misconfigured, Unavailable
from mastery.events import ingest as ingest_module
from mastery.events.consumer import _apply_in_order, consume
from mastery.events.kafka import KafkaPublisher, consumer_config, create_topics, producer_config
from mastery.events.position import Position
from mastery.offsets import CATCH_ALL
from mastery.ports import Record
from mastery.settings import Settings
from mastery.store import UNKNOWN_TENANT, keys
from mastery.store import event_writes as event_writes_module
from mastery.topics import LEVEL_CHANGED_TOPIC, dlq_topic
from tests.conftest import JWT_SECRET
from tests.helpers import (
    event_data,
    fresh_topics,
    headers_of,
    level_changes,
    process_env,
    produce,
    read_to_end,
    read_topic,
    record,
    resent_stream,
    wait_committed,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

STUDENTS = [f"s{i}" for i in range(40)]


def _stream(tenant: str, topic: str, n: int, seed: int) -> tuple[list[Record], list[Record]]:
    return resent_stream(topic, [tenant], STUDENTS, n, seed)


async def _applied(redis: Redis, tenant: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for s in STUDENTS:
            pipe.hget(keys.state(tenant, s), "version")
        return sum(int(v or 0) for v in await pipe.execute())


async def _wait_for(redis: Redis, tenant: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    applied = await _applied(redis, tenant)
    while applied < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        applied = await _applied(redis, tenant)
    return applied


@dataclass
class _LateRedis:
    """A Redis of the test's topology that nothing listens for until ``start``."""

    cluster: bool
    workdir: Path
    ports: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        if self.cluster:
            self.procs = servers.start_redis_cluster(self.ports, self.workdir)
        else:
            self.procs = [servers.start_redis(self.ports[0], self.workdir)]

    def client(self) -> Redis:
        return (RedisCluster if self.cluster else Redis).from_url(self.url)  # type: ignore[return-value]


@pytest.fixture
def late_redis(redis_topology: str, tmp_path: Path) -> Iterator[_LateRedis]:
    cluster = redis_topology == "cluster"
    ports = servers.free_cluster_ports(3) if cluster else [servers.free_port()]
    late = _LateRedis(cluster, tmp_path, ports)
    yield late
    for proc in late.procs:
        servers.stop(proc)


def _warnings(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(
        r.name == "mastery-consume" and r.levelname == "WARNING" and message in r.getMessage()
        for r in caplog.records
    )


async def test_batches_apply_once_and_poison_flows_to_the_dlq(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    [topic] = fresh_topics(settings, "consume")
    stream, unique = _stream(tenant, topic, 600, seed=1)
    poison = [
        Record(topic, b"garbage", b"s1", {**stream[0].headers, "ce_id": f"bad-{i}".encode()})
        for i in range(5)
    ]
    stream[100:100] = poison[:2]  # in the middle of the partition
    stream += poison[2:]  # and at its end
    produce(settings, stream)

    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
        # Every record (poison too) applied and committed: no later apply can come.
        await wait_committed(settings, topic, f"g-{tenant}", len(stream))
        assert await _applied(redis, tenant) == len(unique)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()

    dead = read_topic(settings, dlq_topic(topic), expected=5)
    assert sorted(headers_of(m)["ce_id"] for m in dead) == [f"bad-{i}" for i in range(5)]
    assert all("malformed" in headers_of(m)["dlq_reason"] for m in dead)
    outcomes = [f[b"outcome"] for _, f in await redis.xrange(keys.audit(tenant))]
    assert outcomes.count(b"applied") == len(unique)
    assert outcomes.count(b"duplicate") == len(stream) - len(unique) - len(poison)


async def test_a_consumer_killed_mid_stream_loses_and_doubles_nothing(
    settings: Settings, redis: Redis, tenant: str, tmp_path: Path
) -> None:
    [topic] = fresh_topics(settings, "crash")
    stream, unique = _stream(tenant, topic, 4000, seed=2)
    produce(settings, stream)
    env = process_env(settings, MASTERY_BATCH_SIZE="50")
    argv = [sys.executable, "-m", "mastery.cli", "consume", topic, "--group", f"g-{tenant}"]

    first = subprocess.Popen(argv, env=env)
    try:
        applied = await _wait_for(redis, tenant, 1)
        first.send_signal(signal.SIGKILL)  # no chance to finish its batch or commit
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = await _applied(redis, tenant)
    assert 0 < applied <= killed_at < len(unique), "the kill must land mid-stream"

    second = subprocess.Popen(argv, env=env)
    try:
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
        await wait_committed(settings, topic, f"g-{tenant}", len(stream))
        assert await _applied(redis, tenant) == len(unique)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0  # a clean stop after SIGTERM

    outcomes = [f[b"outcome"] for _, f in await redis.xrange(keys.audit(tenant))]
    assert outcomes.count(b"applied") == len(unique)


async def test_redis_emptied_under_a_running_consumer_stops_it(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """The next batch finds the offsets gone: replayed from the topics' start, erased
    students would come back, so the consumer stops with the rebuild's line instead."""
    [topic] = fresh_topics(settings, "emptied-live")
    group = f"g-{tenant}"
    stream, unique = _stream(tenant, topic, 50, seed=5)
    produce(settings, stream)
    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=group))
    try:
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
        lost = [k async for k in redis.scan_iter(match=f"{keys.tenant_prefix(tenant)}*")]
        await redis.delete(*lost, keys.offsets(UNKNOWN_TENANT, group))
        deadline = time.monotonic() + 30
        while not task.done():  # a few batches: the consumer meets the moved offsets
            assert time.monotonic() < deadline, "the consumer went on"
            late = record(Component.QUIZ, event_data(tenant, "s0", 1.0), topic=topic)
            produce(settings, [late])
            await asyncio.sleep(0.2)
        with pytest.raises(Misconfigured, match="redis was emptied"):
            await task
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 30)
        await res.aclose()


async def test_offsets_moved_under_a_lone_batch_are_followed_at_once(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """A Redis failover lost the last writes: the next batch meets offsets it did not
    expect. The consumer seeks back to them and applies that batch again at once, not
    when some later event happens to arrive (a trickle could stop for the night)."""
    [topic] = fresh_topics(settings, "moved-lone")
    group = f"g-{tenant}"
    stream, unique = _stream(tenant, topic, 30, seed=7)
    produce(settings, stream)
    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=group))
    try:
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
        offsets = keys.offsets(tenant, group)
        fields = await redis.hkeys(offsets)
        assert fields
        await redis.hset(offsets, mapping={f: 0 for f in fields})  # the lost writes
        late = record(Component.QUIZ, event_data(tenant, "s0", 1.0), topic=topic)
        produce(settings, [late])  # one event, and no other after it
        assert await _wait_for(redis, tenant, len(unique) + 1, timeout=20) == len(unique) + 1
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()


async def test_an_emptied_redis_stops_the_consumer_until_a_rebuild(
    settings: Settings, redis: Redis, tenant: str, tmp_path: Path
) -> None:
    """Replaying the topics into an emptied Redis would bring erased students back: the
    consumer refuses, in one line, and goes on once `mastery rebuild` (which replays the
    erasures first) has recorded where it stopped."""
    create_topics(settings)  # the rebuild reads the erasures from mastery.audit
    [topic] = fresh_topics(settings, "emptied")
    group = f"g-{tenant}"
    stream, unique = _stream(tenant, topic, 300, seed=3)
    produce(settings, stream)
    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=group))
    try:
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    # Redis loses everything of this group and tenant (the session's Redis is shared).
    lost = [k async for k in redis.scan_iter(match=f"{keys.tenant_prefix(tenant)}*")]
    await redis.delete(*lost)
    await redis.delete(keys.offsets(UNKNOWN_TENANT, group))
    argv = [sys.executable, "-m", "mastery.cli", "consume", topic, "--group", group]
    refused = subprocess.run(
        argv, env=process_env(settings), capture_output=True, text=True, timeout=60
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stderr
    assert len(lines) == 1, refused.stderr
    assert "redis was emptied" in lines[0], lines[0]
    assert "Run `mastery rebuild`" in lines[0], lines[0]

    try:
        await rebuild(res, [topic], group=group)
        assert await _applied(redis, tenant) == len(unique)
        produce(settings, [record(Component.QUIZ, event_data(tenant, "s0", 1.0), topic=topic)])
        task = asyncio.create_task(consume(res, [topic], stop := asyncio.Event(), group=group))
        assert await _wait_for(redis, tenant, len(unique) + 1) == len(unique) + 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()


async def test_a_consumer_started_while_redis_is_down_waits_for_it(
    settings: Settings, late_redis: _LateRedis, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis out of reach when the partitions are assigned: reading the applied offsets is
    retried (a warning each time), not a traceback that ends the process; once Redis
    answers, the consumer starts where it says and applies the events."""
    [topic] = fresh_topics(settings, "late-redis")
    stream, unique = _stream(tenant, topic, 100, seed=8)
    produce(settings, stream)
    update = {"redis_url": late_redis.url, "redis_cluster": late_redis.cluster}
    res = build(settings.model_copy(update=update), source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    redis = late_redis.client()
    try:
        deadline = time.monotonic() + 30
        while _warnings(caplog, "retrying to read applied offsets") < 2:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "no retry while redis is down"
            await asyncio.sleep(0.1)
        late_redis.start()
        assert await _wait_for(redis, tenant, len(unique)) == len(unique)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()
        await redis.aclose()


async def test_a_consumer_stopped_while_redis_is_down_returns_at_once(
    kafka_servers: str, tenant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rollout during a Redis outage: SIGTERM sets ``stop`` while a batch is retried. The
    retries give up and the consumer returns within seconds, not at the end of the pod's
    grace period by SIGKILL; the batch is not lost, the next consumer applies it."""
    port = servers.free_port()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        kafka_bootstrap_servers=kafka_servers,
        jwt_secret=JWT_SECRET,
        topic_partitions=3,
    )
    [topic] = fresh_topics(settings, "stop-redis-down")
    group = f"g-{tenant}"
    before, unique_before = _stream(tenant, topic, 100, seed=9)
    during, unique_during = _stream(tenant, topic, 100, seed=10)
    expected = len(unique_before) + len(unique_during)
    redis_proc = servers.start_redis(port, tmp_path, persist=True)  # its writes outlive it
    try:
        async with Redis.from_url(settings.redis_url) as redis:
            res = build(settings, source="test")
            stop = asyncio.Event()
            task = asyncio.create_task(consume(res, [topic], stop, group=group))
            try:
                produce(settings, before)
                assert await _wait_for(redis, tenant, len(unique_before)) == len(unique_before)
                servers.stop(redis_proc)
                produce(settings, during)
                deadline = time.monotonic() + 30
                while _warnings(caplog, "retrying batch") < 2:
                    assert not task.done(), task.exception()
                    assert time.monotonic() < deadline, "no batch retried while redis is down"
                    await asyncio.sleep(0.1)
                stopped_at = time.monotonic()
                stop.set()
                await asyncio.wait_for(task, 20)
                assert time.monotonic() - stopped_at < 5
            finally:
                stop.set()
                task.cancel()
                await res.aclose()

        redis_proc = servers.start_redis(port, tmp_path, persist=True)
        async with Redis.from_url(settings.redis_url) as redis:
            res = build(settings, source="test")
            task = asyncio.create_task(consume(res, [topic], stop := asyncio.Event(), group=group))
            try:
                assert await _wait_for(redis, tenant, expected) == expected
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
                await res.aclose()
    finally:
        servers.stop(redis_proc)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_consumer_stuck_on_redis_still_shows_its_backlog_and_retries(
    kafka_servers: str, tenant: str, tmp_path: Path
) -> None:
    """While a batch retries against a down Redis the backlog is still measured (so the
    lag alerts can fire), each retry is counted by the dependency it waits for, and the
    time of the last applied batch stands still."""
    port = servers.free_port()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        kafka_bootstrap_servers=kafka_servers,
        jwt_secret=JWT_SECRET,
        topic_partitions=3,
    )
    [topic] = fresh_topics(settings, "stuck")
    before, unique_before = _stream(tenant, topic, 60, seed=11)
    during, _ = _stream(tenant, topic, 60, seed=12)
    redis_proc = servers.start_redis(port, tmp_path)
    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        async with Redis.from_url(settings.redis_url) as redis:
            produce(settings, before)
            assert await _wait_for(redis, tenant, len(unique_before)) == len(unique_before)
        await asyncio.sleep(0.5)  # the consumer notes its last apply just after Redis holds it
        servers.stop(redis_proc)
        applied_at = _sample("mastery_consumer_last_applied_timestamp_seconds")
        assert time.time() - 60 < applied_at <= time.time()
        samples = _sample("mastery_consumer_lag_messages_count", topic=topic)
        retries = _sample("mastery_consumer_retries_total", reason="redis")
        produce(settings, during)
        deadline = time.monotonic() + 30
        while not (
            _sample("mastery_consumer_backlog_messages", topic=topic) > 0
            and _sample("mastery_consumer_lag_messages_count", topic=topic) > samples + 3
            and _sample("mastery_consumer_retries_total", reason="redis") > retries + 2
        ):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the stuck consumer measured nothing"
            await asyncio.sleep(0.2)
        assert _sample("mastery_consumer_last_applied_timestamp_seconds") == applied_at
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()
        servers.stop(redis_proc)


async def test_a_redis_acl_that_refuses_the_consumer_stops_it_naming_why(
    single_redis_url: str, kafka_servers: str, tenant: str
) -> None:
    """A command the Redis user's rule lacks (here SCAN, to find the applied offsets) is
    a setting to fix, not an outage: the consumer stops with it, it does not retry."""
    admin = Redis.from_url(single_redis_url)
    user = f"no-scan-{tenant}"
    await admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["m:*"], commands=["+@all", "-scan"]
    )
    url = single_redis_url.replace("redis://", f"redis://{user}:pw@")
    settings = Settings(redis_url=url, kafka_bootstrap_servers=kafka_servers, jwt_secret=JWT_SECRET)
    [topic] = fresh_topics(settings, "acl")
    produce(settings, [record(Component.QUIZ, event_data(tenant, "s0", 1.0), topic=topic)])
    res = build(settings, source="test")
    try:
        with pytest.raises(Misconfigured, match=r"scan.*docs/redis-acl\.md"):
            await asyncio.wait_for(consume(res, [topic], asyncio.Event(), group=f"g-{tenant}"), 30)
    finally:
        await res.aclose()
        await admin.acl_deluser(user)
        await admin.aclose()


def _fetched(tenant: str, topic: str, first: int, n: int) -> list[Message]:
    """``n`` quiz events of ``tenant`` as a fetch from partition 0 brings them, from ``first``."""
    out = []
    for offset in range(first, first + n):
        r = record(Component.QUIZ, event_data(tenant, f"s{offset % 5}", 0.5), topic=topic)
        headers = list(r.headers.items())
        out.append(Message(topic, 0, offset, r.key, r.value, headers))
    return out


async def test_a_batch_fetched_before_a_rebalance_is_dropped_not_applied(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """A Redis failover lost a tenant's writes, then a rebalance placed the partitions
    anew while a batch was in flight. The book now holds what Redis says (behind that
    batch); applying it would record its end for the tenant and skip the lost events
    for good (the failover test's rare loss). The batch is dropped instead: the new
    positions read the lost events again."""
    [topic] = fresh_topics(settings, "stale")
    group = f"g-{tenant}"
    res = build(settings, source="test")
    consumer = AIOConsumer(consumer_config(settings, group))
    position = Position(res.store, group, asyncio.Event())
    partitions = [TopicPartition(topic, 0)]
    offsets = keys.offsets(tenant, group)
    field = f"{topic}:0"
    try:
        await position.place(consumer, partitions)
        first = (_fetched(tenant, topic, 0, 10), position.generation)
        await _apply_in_order(res, consumer, position, first, None, {})
        assert await redis.hget(offsets, field) == b"10"
        applied = await _applied(redis, tenant)

        gate = asyncio.Event()
        previous = asyncio.create_task(gate.wait())  # the batch before it, still applying
        second = (_fetched(tenant, topic, 10, 10), position.generation)
        stale = asyncio.create_task(
            _apply_in_order(res, consumer, position, second, previous, {})  # type: ignore[arg-type]
        )
        await redis.hset(offsets, field, 0)  # the failover lost the tenant's writes
        await position.place(consumer, partitions)  # the rebalance: the book is Redis's
        gate.set()
        await stale

        assert await redis.hget(offsets, field) == b"0", "the lost events would be skipped"
        assert await _applied(redis, tenant) == applied
    finally:
        await consumer.close()
        await res.aclose()


async def test_a_tenant_whose_first_write_a_failover_lost_is_read_again(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """A tenant's first events in a partition were applied on a master that then failed
    over to a replica without them: no offset of theirs is left anywhere. Their entry as
    a newcomer in the catch-all, written before those events applied, says where to read
    again from; without it the partition resumed at the other tenants' offsets, past the
    lost events (the failover test's ``[cluster-running]`` loss)."""
    [topic] = fresh_topics(settings, "newcomer")
    group = f"g-{tenant}"
    newcomer = f"{tenant}-new"
    res = build(settings, source="test")
    consumer = AIOConsumer(consumer_config(settings, group))
    position = Position(res.store, group, asyncio.Event())
    field = f"{topic}:0"
    try:
        await position.place(consumer, [TopicPartition(topic, 0)])
        mixed = [*_fetched(newcomer, topic, 10, 5), *_fetched(tenant, topic, 15, 5)]
        for fetched in (_fetched(tenant, topic, 0, 10), mixed):
            await _apply_in_order(res, consumer, position, (fetched, position.generation), None, {})
        await redis.delete(keys.offsets(newcomer, group))  # the failover lost its first write
        await position.seek_back(consumer)
        assert position.starts == {field: 10}
        entry = await redis.hget(keys.offsets(CATCH_ALL, group), f"{field}:{newcomer}")
        assert entry == b"10"
    finally:
        await consumer.close()
        await res.aclose()


async def _until(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_store_refusal_survives_a_consumer_stopped_while_the_broker_is_down(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    """`mastery consume` applies a batch holding an event the store refuses (a full day
    record); its dead letter cannot be published (the broker is down) and the batch is
    retried until the pod is stopped. The tenant's offset stopped at the refused event, so
    the next consumer reads it again and dead-letters it. It resumed past the batch
    before: the event audited "rejected", never in the DLQ (a crash, or a rebalance
    dropping the retried batch, between the apply and the publish did the same; found by
    a durability reviewer)."""
    [topic] = fresh_topics(settings, "refusal")
    group = f"g-{tenant}"
    day = datetime.now(UTC) - timedelta(days=1)
    res = build(settings, source="test")
    # The broker, as this consumer's publisher sees it: down (nothing listens on port 1).
    down = build(settings.model_copy(update={"kafka_timeout_ms": 1500}), source="test")
    dead_broker = settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1500}
    )
    down.publisher = KafkaPublisher(producer_config(dead_broker))
    try:
        prefill = [
            Observation(f"pre-{i}", tenant, "s1", Component.QUIZ, 0.5, day) for i in range(DAY_MAX)
        ]
        for i in range(0, DAY_MAX, 5000):
            await res.store.apply([(o, b"{}") for o in prefill[i : i + 5000]], [], day)
        produce(
            settings,
            [
                record(
                    Component.QUIZ,
                    event_data(tenant, "s1", 0.9, at=day),
                    event_id="over",
                    topic=topic,
                ),
                record(
                    Component.QUIZ, event_data(tenant, "s2", 0.9), event_id="fresh", topic=topic
                ),
            ],
        )

        stop = asyncio.Event()
        first = asyncio.create_task(consume(down, [topic], stop, group))

        async def applied() -> bool:  # the batch's script calls landed
            return bool(await redis.exists(keys.state(tenant, "s2")))

        await _until(applied)
        await asyncio.sleep(2)  # its dead letter timed out at least once: retrying
        stop.set()  # SIGTERM while the broker is away
        await asyncio.wait_for(first, 30)

        # The next consumer, with the broker back, reads on until a later event is applied.
        stop = asyncio.Event()
        second = asyncio.create_task(consume(res, [topic], stop, group))
        produce(settings, [record(Component.QUIZ, event_data(tenant, "s3", 0.9), topic=topic)])

        async def caught_up() -> bool:
            return bool(await redis.exists(keys.state(tenant, "s3")))

        await _until(caught_up)
        stop.set()
        await asyncio.wait_for(second, 30)
    finally:
        await res.aclose()
        await down.aclose()

    audited = await redis.xrange(keys.audit(tenant))
    # Audited (once per attempt: the retry refused it again), so the store did refuse it.
    assert {f[b"outcome"] for _, f in audited if b'"over"' in f[b"event"]} == {b"rejected"}
    dead = read_to_end(settings, dlq_topic(topic), timeout=10)
    assert [headers_of(m)["ce_id"] for m in dead] == ["over"], "the refusal was never dead-lettered"


async def test_a_consumer_waiting_out_redis_stays_in_its_group(
    settings: Settings, redis: Redis, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops answering for longer than librdkafka's max.poll.interval.ms (7 s here,
    300 s by default) while two batches are in flight: the consumer keeps polling, its
    partitions paused, so it is not taken out of its group (and its partitions moved for
    nothing), and nothing is lost."""
    [topic] = fresh_topics(settings, "stays")
    polling = {"max.poll.interval.ms": 7000, "session.timeout.ms": 6000}
    own = settings.model_copy(
        update={"batch_size": 1, "redis_timeout_ms": 1000, "kafka_properties": polling}
    )
    res = build(own, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    events = [record(Component.QUIZ, event_data(tenant, "s0", 0.5), topic=topic) for _ in range(4)]
    try:
        produce(settings, events[:1])
        assert await _wait_for(redis, tenant, 1) == 1
        nodes = {"target_nodes": RedisCluster.ALL_NODES} if isinstance(redis, RedisCluster) else {}
        await redis.execute_command("CLIENT PAUSE", 12_000, "ALL", **nodes)
        produce(settings, events[1:])
        await asyncio.sleep(13)
        assert await _wait_for(redis, tenant, 4) == 4
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()
    # Taken out, the consumer logs librdkafka's _MAX_POLL_EXCEEDED ("leaving group") and
    # places its partitions anew once it polls again.
    placed = [r for r in caplog.records if r.name == "mastery-consume" and r.msg == "resuming"]
    assert (_warnings(caplog, "consumer error"), len(placed)) == (0, 1)


async def test_a_busy_consumer_publishes_a_quiet_tenants_leftover_level_change(
    settings: Settings, redis: Redis, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut-off publish's leftover of a quiet tenant (as in the idle consumer's test below),
    while another tenant's backlog keeps the consumer busy: it is never idle, and sweeps
    all the same (every minute; a fifth of a second here, and a note is a leftover
    at once). It swept only while idle, so a busy deployment never published a quiet
    tenant's leftover."""
    monkeypatch.setattr(ingest_module, "_SWEEP_EVERY_S", 0.2)
    monkeypatch.setattr(event_writes_module, "LEFTOVER_MS", 0)
    create_topics(settings, [LEVEL_CHANGED_TOPIC])
    [topic] = fresh_topics(settings, "busy")
    busy, backlog = f"{tenant}-busy", 30_000
    produce(  # the quiet tenant's event first: known once its batch is applied
        settings,
        [record(Component.QUIZ, event_data(tenant, "s1", 0.1), topic=topic)]
        + [
            record(Component.QUIZ, event_data(busy, STUDENTS[i % 40], 0.5), topic=topic)
            for i in range(backlog)
        ],
    )
    away = settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 100}
    )
    cut_off = build(away, source="test")
    # Small batches: the backlog lasts seconds after the leftover is made (a publish to no
    # broker fails after about a second, librdkafka's timeout scan).
    res = build(settings.model_copy(update={"batch_size": 10}), source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        assert await _wait_for(redis, tenant, 1) == 1
        with pytest.raises(Unavailable):
            await cut_off.ingestor.ingest(
                [record(c, event_data(tenant, "s1", 1.0)) for c in Component]
            )
        await cut_off.aclose()
        deadline = time.monotonic() + 20
        while await redis.xlen(keys.outbox(tenant)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        swept_at = await redis.xlen(keys.audit(busy))
        assert await _wait_for_audit(redis, busy, backlog) == backlog
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()
    assert swept_at < backlog, "swept only once the backlog was drained (idle)"
    assert len(level_changes(settings, tenant)) == 1


async def _wait_for_audit(redis: Redis, tenant: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (n := await redis.xlen(keys.audit(tenant))) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return n


async def test_an_idle_consumer_publishes_a_quiet_tenants_leftover_level_change(
    settings: Settings, redis: Redis, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish cut off (the broker away) left a level change in the tenant's outbox, and
    the tenant sends nothing more: no next batch of theirs will publish it. The idle
    consumer sweeps the outboxes of the tenants it knows (every minute; a second here)."""
    monkeypatch.setattr(ingest_module, "_SWEEP_EVERY_S", 1.0)
    create_topics(settings, [LEVEL_CHANGED_TOPIC])
    [topic] = fresh_topics(settings, "quiet")
    res = build(settings, source="test")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(res, [topic], stop, group=f"g-{tenant}"))
    try:
        produce(settings, [record(Component.QUIZ, event_data(tenant, "s1", 0.1), topic=topic)])
        assert await _wait_for(redis, tenant, 1) == 1  # the tenant has offsets: known
        away = settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
        )
        cut_off = build(away, source="test")
        with pytest.raises(Unavailable):
            await cut_off.ingestor.ingest(
                [record(c, event_data(tenant, "s1", 1.0)) for c in Component]
            )
        await cut_off.aclose()
        assert await redis.xlen(keys.outbox(tenant)) == 1
        deadline = time.monotonic() + 20
        while await redis.xlen(keys.outbox(tenant)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await res.aclose()
    assert len(level_changes(settings, tenant)) == 1

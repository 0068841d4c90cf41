"""(c) Event -> state latency at a fixed rate, against raw Kafka produce -> consume latency.

The bench produces at ``RATE`` events/s on a fixed schedule, each event for a new
student, and stamps every record with its due time (``bench_due``, CLOCK_MONOTONIC,
comparable across processes) and sequence number. Latency runs from the due time, so
a late send counts (no coordinated omission).

- event -> state: ``mastery consume`` applies the events; the bench subscribes to Redis
  keyspace notifications for hash commands on the students' ``state`` keys
  (``notify-keyspace-events Kh``, set for this benchmark only). Redis sends them after
  the script that wrote the key has finished, so the first one for a student is the
  moment its new state is readable.
- baseline: ``bench._kafka_probe``, a plain confluent-kafka consumer with the same client
  settings, timestamps each record as ``poll()`` returns it. Same rate, same records.

The 15 s are run as ``SEGMENTS`` segments, each on a fresh broker: Tansu's memory
storage gets slower as a partition grows under a live consumer (measured here: produce
-> consume P50 from 6 ms to 80+ ms within 15 s at 2k/s, broker CPU past one core),
which would measure the test broker rather than the consumer. bench/README.md has the
numbers.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
from confluent_kafka import Producer
from redis.asyncio import Redis

from bench._events import create_event_topics, learning_event
from bench._harness import BIN, Row, percentile, progress
from mastery.domain import Component
from mastery.events.kafka import producer_config
from mastery.store import keys

if TYPE_CHECKING:
    from pathlib import Path

    from bench._events import KafkaEvent
    from bench._harness import Stack

__all__ = ["run"]

RATE = 2000
SEGMENTS = 3
SEGMENT_SECONDS = 5  # measured, per segment
WARMUP_SECONDS = 1  # sent first in each segment, not measured: consumer start-up
TENANT = "bench-latency"
DUE = struct.Struct("<d")
_PATTERN = f"__keyspace@0__:{keys.student_prefix(TENANT, '*')}state"


async def run(stack: Stack) -> list[Row]:
    events = _events(RATE * (WARMUP_SECONDS + SEGMENT_SECONDS))
    raw: list[float] = []
    state: list[float] = []
    raw_lost = lost = 0
    for segment in range(1, SEGMENTS + 1):
        progress(f"latency: segment {segment}/{SEGMENTS}, raw Kafka then mastery consume")
        latencies, missing = await _kafka_only(stack, events)
        raw += latencies
        raw_lost += missing
        latencies, missing = await _event_to_state(stack, events)
        state += latencies
        lost += missing
    raw.sort()
    state.sort()
    seconds = SEGMENTS * SEGMENT_SECONDS
    rows = []
    for q in (50, 95, 99):
        mine, base = percentile(state, q) * 1e3, percentile(raw, q) * 1e3
        rows.append(
            Row(
                "latency",
                f"P{q} event -> state at {RATE:,} events/s ({seconds}s, 1 event per student)",
                f"{mine:.1f} ms",
                f"{base:.1f} ms (produce -> plain consumer)",
                f"{mine - base:+.1f} ms",
                "< 50 ms" if q == 99 else "-",
                mine < 50 if q == 99 else None,
            )
        )
    worst = f"{state[-1] * 1e3:.0f} ms / {raw[-1] * 1e3:.0f} ms" if state and raw else "-"
    rows.append(
        Row(
            "latency", "max (state / raw Kafka); events never seen", f"{worst}; {lost} / {raw_lost}"
        )
    )
    return rows


def _events(total: int) -> list[KafkaEvent]:
    rng = random.Random(3)
    components = list(Component)
    now = datetime.now(UTC)
    return [
        learning_event(
            components[i % len(components)],
            event_id=f"lat-{i}",
            tenant=TENANT,
            student=f"l{i}",
            score=round(rng.random(), 3),
            occurred_at=now - timedelta(seconds=1),
            class_id="c1",
        )
        for i in range(total)
    ]


async def _kafka_only(stack: Stack, events: list[KafkaEvent]) -> tuple[list[float], int]:
    stack.fresh_kafka()  # blocking, but children must be spawned on the main thread
    topics = create_event_topics(stack.settings(), Component)
    ready, out = stack.workdir / "probe.ready", stack.workdir / "probe.json"
    ready.unlink(missing_ok=True)
    argv: list[str | Path] = [sys.executable, "-m", "bench._kafka_probe"]
    argv += ["--servers", stack.kafka_servers]
    argv += ["--group", "bench-probe", "--ready", ready, "--out", out]
    argv += ["--expected", str(len(events)), *topics]
    proc = stack.spawn("kafka-probe", argv)
    try:
        await asyncio.to_thread(stack.wait_for_file, ready, proc)
        await _produce_on_schedule(stack, events)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stack.stop(proc)  # SIGTERM: the probe writes what it has
    latencies: dict[int, float] = dict(orjson.loads(out.read_bytes()))
    return _measured(latencies, len(events))


async def _event_to_state(stack: Stack, events: list[KafkaEvent]) -> tuple[list[float], int]:
    stack.fresh_kafka()  # blocking, but children must be spawned on the main thread
    topics = create_event_topics(stack.settings(), Component)
    client = Redis.from_url(stack.redis_url)
    await client.flushall()
    await client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub()
    await pubsub.psubscribe(_PATTERN)
    ready = stack.workdir / "latency.ready"
    ready.unlink(missing_ok=True)
    argv: list[str | Path] = [BIN / "mastery", "consume", *topics, "--group", "bench-latency"]
    argv += ["--ready-file", ready]
    proc = stack.spawn("mastery-consume-latency", argv, env=stack.env())
    loop = asyncio.get_running_loop()
    applied: dict[int, float] = {}

    async def listen() -> None:
        while len(applied) < len(events):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                seq = int(message["channel"].rsplit(b":s:l", 1)[1].split(b":", 1)[0])
                applied.setdefault(seq, loop.time())

    listener = asyncio.create_task(listen())
    try:
        await asyncio.to_thread(stack.wait_for_file, ready, proc)
        due = await _produce_on_schedule(stack, events)
        # Whatever has not arrived 20 s after the last send counts as never seen.
        await asyncio.wait([listener], timeout=20)
    finally:
        listener.cancel()
        stack.stop(proc)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.config_set("notify-keyspace-events", "")
        await client.aclose()
    return _measured({i: at - due[i] for i, at in applied.items()}, len(events))


def _measured(latencies: dict[int, float], total: int) -> tuple[list[float], int]:
    """Latencies of the measured (post-warm-up) events, and how many never came."""
    measured = range(RATE * WARMUP_SECONDS, total)
    values = [latencies[i] for i in measured if i in latencies]
    return values, len(measured) - len(values)


async def _produce_on_schedule(stack: Stack, events: list[KafkaEvent]) -> dict[int, float]:
    """Send event ``i`` at ``start + i / RATE``; returns each one's due time."""
    producer = Producer(producer_config(stack.settings()) | {"log_level": 4})
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    due: dict[int, float] = {}
    for i, e in enumerate(events):
        at = start + i / RATE
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        headers = [*e.headers, ("bench_due", DUE.pack(at)), ("bench_seq", str(i).encode())]
        # (sequence and due time: the probe reads them; mastery ignores non-CloudEvent headers)
        producer.produce(e.topic, e.value, e.key, headers=headers)
        producer.poll(0)
        due[i] = at
    if await asyncio.to_thread(producer.flush, 30):
        raise RuntimeError("the broker did not acknowledge every event")
    return due

"""(d) Redis memory per student after 90 days of history.

Workload: ``STUDENTS`` students of one tenant, each with one event per component per
day (4 a day, at 08:00, 10:00, 12:00 and 14:00 UTC, one class, no area) for the 90
days ending yesterday. Written through ``RedisStore.apply`` in batches of
``BATCH`` with ``now`` at 20:00 of each simulated day, so every key is exactly as the
consumer would leave it (the decode-side window check is not involved).

Measured: ``MEMORY USAGE <key> SAMPLES 0`` for every key of every student, by kind;
the ``INFO used_memory`` delta (adds the keyspace's dict and expiry entries); the
tenant's audit stream on its own, per entry. The baseline is the payload: the bytes of
the hash fields and values, of the ``days`` string and 8 per event-id hash in ``seen``
— what the data weighs before Redis's per-key and per-allocation overhead.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bench._harness import Row, progress
from mastery.domain import Component, Observation
from mastery.events.ingest import audit_record
from mastery.ports import Record
from mastery.store import RedisStore, keys
from mastery.topics import event_topic

if TYPE_CHECKING:
    from bench._harness import Stack

__all__ = ["run"]

STUDENTS = 2000
DAYS = 90
BATCH = 1000
TENANT = "bench-memory"
TARGET = 2048
_KINDS = ("state", "days", "seen", "cohort")


async def run(stack: Stack) -> list[Row]:
    client = Redis.from_url(stack.redis_url)
    try:
        await client.flushall()
        before = (await client.info("memory"))["used_memory"]
        progress(f"memory: {STUDENTS} students x {DAYS} days x 4 events through RedisStore.apply")
        events = await _write_history(client, stack)
        after = (await client.info("memory"))["used_memory"]
        usage, payload, seen_sets = await _measure(client)
        audit_key = keys.audit(TENANT)
        audit_bytes = await client.memory_usage(audit_key, samples=0) or 0
        audit_entries = await client.xlen(audit_key)
    finally:
        await client.aclose()

    per_student = sum(usage[k] for k in _KINDS) / STUDENTS
    raw = sum(payload[k] for k in _KINDS) / STUDENTS
    delta = (after - before - audit_bytes) / STUDENTS
    parts = ", ".join(f"{k} {usage[k] / STUDENTS:,.0f}" for k in _KINDS)
    raw_parts = ", ".join(f"{k} {payload[k] / STUDENTS:,.0f}" for k in _KINDS)
    workload = f"{DAYS} days x 4 events/day, {STUDENTS:,} students"
    return [
        Row(
            "memory",
            f"Redis bytes per student, MEMORY USAGE summed ({workload})",
            f"{per_student:,.0f} B",
            f"{raw:,.0f} B (payload)",
            f"{per_student / raw:.2f}x",
            "<= 2 KB",
            per_student <= TARGET,
        ),
        Row(
            "memory",
            f"  by key kind, B/student ({seen_sets / STUDENTS:.1f} seen sets each)",
            parts,
            raw_parts,
        ),
        Row(
            "memory",
            "INFO used_memory delta per student (audit stream excluded)",
            f"{delta:,.0f} B",
            "-",
            "-",
            "<= 2 KB",
            delta <= TARGET,
        ),
        Row(
            "memory",
            f"audit stream, bytes per entry ({audit_entries:,} kept of {events:,} events)",
            f"{audit_bytes / max(1, audit_entries):,.0f} B",
            f"{payload['audit'] / max(1, audit_entries):,.0f} B (record)",
            f"{audit_bytes / max(1, payload['audit']):.2f}x",
        ),
    ]


async def _write_history(client: Redis, stack: Stack) -> int:
    settings = stack.settings()
    store = RedisStore(client, settings.scoring_model(), settings.audit_maxlen)
    rng = random.Random(4)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    written = 0
    for d in range(DAYS):
        day = midnight - timedelta(days=DAYS - d)
        now = day + timedelta(hours=20)
        batch: list[tuple[Observation, bytes]] = []
        for n in range(STUDENTS):
            for k, component in enumerate(Component):
                obs = Observation(
                    event_id=f"m-{d}-{n}-{k}",
                    tenant=TENANT,
                    student_id=f"s{n}",
                    component=component,
                    score=round(rng.random(), 3),
                    occurred_at=day + timedelta(hours=8 + 2 * k),
                    class_id=f"c{n % 40}",
                )
                record = Record(event_topic(component), None, partition=0, offset=written)
                batch.append((obs, audit_record(record, obs, now)))
                written += 1
                if len(batch) == BATCH:
                    await store.apply(batch, [], now)
                    batch = []
        if batch:
            await store.apply(batch, [], now)
    return written


async def _measure(client: Redis) -> tuple[Counter[str], Counter[str], int]:
    """(MEMORY USAGE by kind, payload bytes by kind, number of seen sets)."""
    found = sorted({k async for k in client.scan_iter(match=f"m:{{{TENANT}*", count=1000)})
    usage: Counter[str] = Counter()
    payload: Counter[str] = Counter()
    seen_sets = 0
    async with client.pipeline(transaction=False) as pipe:
        for key in found:
            pipe.memory_usage(key, samples=0)
            kind = _kind(key)
            if kind == "state":
                pipe.hgetall(key)
            elif kind == "days":
                pipe.strlen(key)
            elif kind == "seen":
                pipe.scard(key)
            elif kind == "audit":
                pipe.xrange(key)
            else:  # cohort indexes: counted by MEMORY USAGE only
                pipe.exists(key)
        replies = await pipe.execute()
    for key, used, content in zip(found, replies[::2], replies[1::2], strict=True):
        kind = _kind(key)
        usage[kind] += used or 0
        if kind == "state":
            payload[kind] += sum(len(f) + len(v) for f, v in content.items())
        elif kind == "days":
            payload[kind] += content
        elif kind == "seen":
            payload[kind] += 8 * content
            seen_sets += 1
        elif kind == "audit":
            payload[kind] += sum(len(v) for _, fields in content for v in fields.values())
    return usage, payload, seen_sets


def _kind(key: bytes) -> str:
    if key.endswith(b":state"):
        return "state"
    if key.endswith(b":days"):
        return "days"
    if b":seen:" in key:
        return "seen"
    if key == keys.audit(TENANT).encode():
        return "audit"
    return "cohort"  # the tenant's cohort indexes, active set, tombstones

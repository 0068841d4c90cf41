"""Retention: every key expires, and `mastery retention check` says when one does not."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.store import Outcome
from mastery.store.retention import keys_without_ttl
from tests.helpers import event_data, process_env, record

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from mastery.settings import Settings


def _check(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = process_env(settings)
    argv = [sys.executable, "-m", "mastery.cli", "retention", "check"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


async def test_retention_check_finds_keys_without_a_ttl(
    settings: Settings, redis: Redis, tenant: str
) -> None:
    res = build(settings, source="test")
    try:
        await res.ingestor.ingest([record(Component.QUIZ, event_data(tenant, "s1"))])
    finally:
        await res.aclose()
    assert not [k for k in await keys_without_ttl(redis) if tenant in k]

    ok = _check(settings)
    stray = f"m:{{{tenant}:s1}}:stray"
    await redis.set(stray, b"forever")
    bad = _check(settings)
    await redis.delete(stray)

    assert stray not in ok.stdout
    assert bad.returncode == 1
    assert stray in bad.stdout
    assert "without a TTL" in bad.stderr


async def test_moving_the_clock_past_the_window_refuses_old_events(
    settings: Settings, tenant: str
) -> None:
    """An event stays admissible for 90 days after it happened and no longer."""
    happened = datetime.now(UTC) - timedelta(days=30)
    event = record(Component.QUIZ, event_data(tenant, "s1", at=happened), event_id=f"{tenant}-old")
    outcomes = {}
    for days_later in (89, 91):
        clock = happened + timedelta(days=days_later)
        res = build(settings, source="test", clock=lambda clock=clock: clock)
        try:
            [(outcomes[days_later], _)] = await res.ingestor.ingest([event])
        finally:
            await res.aclose()
    assert outcomes == {89: Outcome.APPLIED, 91: Outcome.REJECTED}

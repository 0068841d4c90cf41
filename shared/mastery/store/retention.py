"""Retention audit: every key this project writes must expire (90 days by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["keys_without_ttl"]

_PREFIX = "m:*"


async def keys_without_ttl(
    client: Redis | RedisCluster, match: str = _PREFIX, count: int = 1000
) -> list[str]:
    """Every key matching ``match`` that has no expiry (SCAN, so safe on a live server)."""
    found: list[str] = []
    batch: list[bytes] = []

    async def check() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.ttl(key)
            ttls = await pipe.execute()
        found.extend(k.decode() for k, ttl in zip(batch, ttls, strict=True) if ttl == -1)
        batch.clear()

    async for key in client.scan_iter(match=match, count=count):
        batch.append(key)
        if len(batch) >= count:
            await check()
    if batch:
        await check()
    return sorted(found)

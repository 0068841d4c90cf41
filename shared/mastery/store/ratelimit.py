"""Rate limits shared by every instance of every function: GCRA in one Lua call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mastery.store.scripts import RATE_LIMIT

if TYPE_CHECKING:
    from mastery.store.connection import RedisConnection

__all__ = ["Decision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float


class RateLimiter:
    """``limit`` requests per ``period_s`` per key, atomically in Redis (no racing counters)."""

    def __init__(self, redis: RedisConnection, period_s: float = 60.0) -> None:
        self._redis = redis
        self._period_ms = int(period_s * 1000)

    async def hit(self, key: str, limit: int) -> Decision:
        """Count one request against ``key``. Raises ``Unavailable`` when Redis is down."""
        reply = await self._redis.run(RATE_LIMIT, [key], [limit, self._period_ms])
        allowed, remaining, retry_ms, reset_ms = (int(x) for x in reply)
        return Decision(bool(allowed), limit, remaining, retry_ms / 1000, reset_ms / 1000)

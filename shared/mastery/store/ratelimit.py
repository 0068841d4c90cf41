"""Rate limits shared by every instance of every function: GCRA in one Lua call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mastery import tracing
from mastery.store.scripts import RATE_LIMIT

if TYPE_CHECKING:
    from mastery.store.connection import RedisConnection

__all__ = ["Decision", "RateLimiter"]


_ALONG = {"mastery.read_with": "rate limit"}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float
    read: dict[bytes | str, bytes | str] | None = None
    """The hash ``hit(..., read=key)`` read along, when allowed (``{}``: no such key)."""


class RateLimiter:
    """``limit`` requests per ``period_s`` per key, atomically in Redis (no racing counters)."""

    def __init__(self, redis: RedisConnection, period_s: float = 60.0) -> None:
        self._redis = redis
        self._period_ms = int(period_s * 1000)

    async def hit(self, key: str, limit: int, read: str | None = None) -> Decision:
        """Count one request against ``key``; when allowed, also read the hash ``read`` (a
        key of the same tenant) in the same call. Raises ``Unavailable`` when Redis is down.
        """
        args = [limit, self._period_ms]
        if read is None:
            reply = await self._redis.run(RATE_LIMIT, [key], args)
        else:
            with tracing.span("redis state read", kind=tracing.SpanKind.CLIENT, attributes=_ALONG):
                reply = await self._redis.run(RATE_LIMIT, [key, read], args)
        allowed, remaining, retry_ms, reset_ms = (int(x) for x in reply[:4])
        fields = dict(zip(reply[4][::2], reply[4][1::2], strict=True)) if len(reply) > 4 else None
        return Decision(bool(allowed), limit, remaining, retry_ms / 1000, reset_ms / 1000, fields)

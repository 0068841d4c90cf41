"""Rate limits shared by every instance of every function: GCRA in one Lua call."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mastery.store.repository import RedisStore

__all__ = ["Decision", "RateLimiter"]

_LUA = files("mastery.store").joinpath("ratelimit.lua").read_text()
_SHA = hashlib.sha1(_LUA.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float


class RateLimiter:
    """``limit`` requests per ``period_s`` per key, atomically in Redis (no racing counters)."""

    def __init__(self, store: RedisStore, period_s: float = 60.0) -> None:
        self._store = store
        self._period_ms = int(period_s * 1000)

    async def hit(self, key: str, limit: int) -> Decision:
        """Count one request against ``key``. Raises ``Unavailable`` when Redis is down."""
        client = self._store.client
        reply = await self._store.with_script(
            _LUA, lambda: client.evalsha(_SHA, 1, key, limit, self._period_ms)
        )
        allowed, remaining, retry_ms, reset_ms = (int(x) for x in reply)
        return Decision(bool(allowed), limit, remaining, retry_ms / 1000, reset_ms / 1000)

"""Rate limits per role (student 50/min as in the spec; teacher and admin higher)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mastery.metrics import RATE_LIMITED
from mastery.policy import Role
from mastery.store import keys
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from mastery.settings import Settings
    from mastery.store.ratelimit import RateLimiter
    from mastery.web.auth import Principal

__all__ = ["enforce_rate_limit"]


async def enforce_rate_limit(
    principal: Principal, limiter: RateLimiter, settings: Settings, read: str | None = None
) -> tuple[dict[str, str], dict[bytes | str, bytes | str] | None]:
    """Count the request: the ``RateLimit-*`` headers to send and the hash named by
    ``read`` (read in the same Redis call; ``None`` without one), or a 429 problem.

    Limits are per caller (tenant, role, subject), per minute, shared by every instance.
    """
    limit = {
        Role.STUDENT: settings.rate_limit_student,
        Role.TEACHER: settings.rate_limit_teacher,
        Role.ADMIN: settings.rate_limit_admin,
    }[principal.role]
    key = keys.rate_limit(principal.tenant, principal.role.value, principal.subject)
    decision = await limiter.hit(key, limit, read)
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
        "RateLimit-Policy": f"{decision.limit};w=60",
    }
    if not decision.allowed:
        RATE_LIMITED.labels(principal.role.value).inc()
        retry = str(max(1, math.ceil(decision.retry_after_s)))
        raise Problem(
            429,
            f"rate limit of {limit} requests a minute exceeded",
            headers={**headers, "Retry-After": retry},
        )
    return headers, decision.read

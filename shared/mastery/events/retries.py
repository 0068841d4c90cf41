"""How ``mastery consume`` waits out Redis or the broker: retries with backoff, counted
and logged, that end as the consumer is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
)

from mastery.errors import Misconfigured, Unavailable
from mastery.logs import logger
from mastery.metrics import CONSUMER_RETRIES, retry_reason

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

__all__ = ["consumer_log", "retrying"]


def retrying(message: str, stop: asyncio.Event) -> AsyncRetrying:
    """Retries on ``Unavailable`` with backoff, but not on ``Misconfigured`` (a Redis ACL
    that refuses a command: retrying will not help); once ``stop`` is set, the next
    failure is raised (``reraise``) and a pause in progress ends at once."""

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return AsyncRetrying(
        retry=retry_if_exception_type(Unavailable) & retry_if_not_exception_type(Misconfigured),
        stop=lambda _: stop.is_set(),
        wait=wait_exponential(multiplier=0.1, max=5),
        sleep=pause,
        reraise=True,
        before_sleep=lambda rs: _retried(message, rs.outcome.exception() if rs.outcome else None),
    )


def _retried(message: str, error: BaseException | None) -> None:
    CONSUMER_RETRIES.labels(retry_reason(error) if error else "other").inc()
    consumer_log().warning(message, extra={"error": str(error or "")})


def consumer_log() -> Logger:
    return logger("mastery-consume")

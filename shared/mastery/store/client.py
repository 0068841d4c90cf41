"""The one place a Redis client is made from ``Settings``: single node or cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

if TYPE_CHECKING:
    from mastery.settings import Settings

__all__ = ["redis_client"]


def redis_client(settings: Settings) -> Redis | RedisCluster:
    """A client of ``REDIS_URL``: any node of a cluster with ``MASTERY_REDIS_CLUSTER``.

    No ``socket_timeout``: ``RedisConnection.io`` puts one deadline on each call.
    """
    kind = RedisCluster if settings.redis_cluster else Redis
    return kind.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_keepalive=True,
        health_check_interval=30,
    )

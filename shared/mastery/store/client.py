"""The one place that turns ``Settings`` into a Redis client: single node or cluster, URL,
ACL user, TLS, timeouts."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from mastery.settings import Settings

__all__ = ["WaitingPool", "redis_client", "redis_options"]


class WaitingPool(ConnectionPool):
    """A pool that, once all its connections are in use, waits for one to be released.

    redis-py's ``BlockingConnectionPool`` waits too, but every checkout pays for an
    ``asyncio.wait_for`` (20-50 us here, more than a third of a round trip); this one
    costs nothing until the pool is full. Waiters are served in arrival order: while any
    wait (or one woken has not yet taken its connection), a newcomer queues behind them,
    and a waiter that still finds none goes back to the front. So under a burst no request
    starves while later ones are served. The wait has no bound of its own: the caller's
    deadline (``RedisConnection.io``) ends it, with a 503.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # woken waiters that have not yet taken a connection

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._waiters and not self._woken:
            try:
                return await self._take(*args, **kwargs)
            except MaxConnectionsError:
                pass
        queue = self._waiters.append
        while True:
            waiter = asyncio.get_running_loop().create_future()
            queue(waiter)
            try:
                await waiter
            except BaseException:  # the caller's deadline, or its cancellation
                if waiter.done() and not waiter.cancelled():
                    self._woken -= 1
                    self._wake()  # woken but leaving: the next waiter takes the turn
                else:
                    waiter.cancel()
                raise
            self._woken -= 1
            try:
                return await self._take(*args, **kwargs)
            except MaxConnectionsError:
                queue = self._waiters.appendleft  # its turn stays first

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        self._wake()

    async def _take(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
            *args, **kwargs
        )
        return connection

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                return


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``Redis.from_url`` (sync or asyncio) for ``settings.redis_url``.

    Credentials in the URL (``rediss://user:pass@host``) win over ``REDIS_USERNAME`` /
    ``REDIS_PASSWORD``, as redis-py merges them. The ``REDIS_TLS_*`` files apply to a
    ``rediss://`` URL only: a plain connection takes no TLS arguments.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_ms / 1000,
        "socket_keepalive": True,
        "health_check_interval": 30,
        # No socket_timeout: RedisStore puts one deadline on each call (see RedisStore.io).
    }
    if settings.redis_username:
        options["username"] = settings.redis_username
    password = settings.redis_password_value()
    if password is not None:
        options["password"] = password
    if urlsplit(settings.redis_url).scheme == "rediss":
        files = {
            "ssl_ca_certs": settings.redis_tls_ca_file,
            "ssl_certfile": settings.redis_tls_cert_file,
            "ssl_keyfile": settings.redis_tls_key_file,
        }
        options |= {name: str(path) for name, path in files.items() if path is not None}
    return options


def redis_client(settings: Settings) -> Redis | RedisCluster:
    """A pooled asyncio client; it connects on first use, never here.

    With ``MASTERY_REDIS_CLUSTER``, a cluster client that learns the nodes from the one
    ``REDIS_URL`` names. ``MASTERY_REDIS_MAX_CONNECTIONS`` bounds the connections (per
    node on a cluster); a function's concurrency must leave it room (docs/deploy.md).
    """
    options = redis_options(settings)
    if settings.redis_cluster:  # per node; past it a call fails at once (Unavailable, 503)
        return RedisCluster.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, **options
        )
    # A burst waits for a free connection, within the call's deadline, instead of failing.
    pool = WaitingPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections, **options
    )
    return Redis.from_pool(pool)

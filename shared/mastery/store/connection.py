"""The connection every Redis adapter shares: one deadline per call, one way to run a script."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from mastery.errors import Misconfigured, Unavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from redis.asyncio import Redis

    from mastery.store.scripts import Script

__all__ = ["DOWN", "RedisConnection"]

T = TypeVar("T")

#: What a Redis that is down, slow or failing over raises.
DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,  # no usable cluster, e.g. not a cluster node
)


_NOT_SINGLE = "redis: REDIS_URL names a Redis Cluster node: set MASTERY_REDIS_CLUSTER=true"
_ACL = "the Redis user lacks a command the engine runs: docs/redis-acl.md has the rule"


class RedisConnection:
    """A client (single node or cluster) with the engine's deadline and script loading."""

    def __init__(self, client: Redis | RedisCluster, timeout_s: float = 5.0) -> None:
        self._redis = client
        self._timeout_s = timeout_s

    @property
    def client(self) -> Redis | RedisCluster:
        return self._redis

    async def run(self, script: Script, key_list: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``; on NOSCRIPT (first use, or Redis restarted) load it and retry.

        Plain EVALSHA keeps a call to one round trip. Every key the script touches is in
        ``key_list``, all in one hash slot, so a cluster routes it by the first.
        """

        def call() -> Awaitable[Any]:
            return self._redis.evalsha(script.sha, len(key_list), *key_list, *args)

        try:
            return await self.io(call())
        except redis.exceptions.NoScriptError:
            await self.load_script(script)
            return await self.io(call())

    @contextlib.asynccontextmanager
    async def pipeline(self, *, transaction: bool) -> AsyncIterator[Any]:
        """A pipeline (MULTI/EXEC with ``transaction``: its keys in one slot); run it with
        ``io(pipe.execute())``. A cluster that cannot be reached is ``Unavailable`` here."""
        try:
            async with self._redis.pipeline(transaction=transaction) as pipe:
                yield pipe
        except DOWN as exc:
            raise Unavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def load_script(self, script: Script) -> None:
        """Load ``script`` into Redis (on every primary of a cluster)."""
        await self.io(self._redis.script_load(script.source))

    async def ping(self) -> None:
        await self.io(self._redis.ping())

    async def scan(self, match: str, count: int = 1_000) -> list[bytes | str]:
        """Every key matching ``match``, on every master of a cluster (SCAN: safe on a live
        server). The deadline is per SCAN call, not for the whole walk: millions of keys
        take thousands of calls."""
        client = self._redis
        found: list[bytes | str] = []
        if not isinstance(client, RedisCluster):
            cursor = None
            while cursor != 0:
                cursor, page = await self.io(client.scan(cursor or 0, match=match, count=count))
                found += page
            return found
        # A cluster answers per node, {name: cursor} (redis-py types it as a single node's).
        reply: Any = await self.io(client.scan(match=match, count=count))  # every master
        cursors: dict[str, int] = reply[0]
        found += reply[1]
        while cursors := {name: c for name, c in cursors.items() if c}:
            for name, cursor in cursors.items():
                node = client.get_node(node_name=name)
                if node is None:  # gone in a failover: the caller retries the walk
                    raise Unavailable(f"redis: cluster node {name} left during a scan")
                reply = await self.io(
                    client.scan(cursor, match=match, count=count, target_nodes=node)
                )
                cursors[name] = reply[0][name]
                found += reply[1]
        return found

    async def io(self, call: Awaitable[T]) -> T:
        """Await one Redis call within the deadline; down or slow is ``Unavailable``, a
        command the ACL refuses (the user's rule lacks it) ``Misconfigured``.

        The deadline lives here rather than in redis-py's ``socket_timeout``, which wraps
        every read in ``asyncio.wait_for`` (a task per command, ~40 % of a round trip).
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except (*DOWN, TimeoutError) as exc:
            raise Unavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        except redis.exceptions.MovedError as exc:  # a cluster node, asked as a single one
            raise Misconfigured(_NOT_SINGLE) from exc
        except redis.exceptions.ResponseError as exc:
            if not _refused(exc):
                raise
            raise Misconfigured(f"redis: {exc} ({_ACL})") from exc


def _refused(exc: redis.exceptions.ResponseError) -> bool:
    """The ACL refused a command: a plain one (NOPERM), or one a script called."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        "can't run this command" in str(exc)
    )

"""A Redis user whose ACL rule lacks a command the engine runs: ``Misconfigured`` naming
it (a 503 that says why, and a retry later rather than a lost event), never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from mastery.errors import Misconfigured
from mastery.store import RedisStore


async def test_a_command_the_acl_rule_lacks_is_misconfigured_naming_it(
    single_redis_url: str, tenant: str
) -> None:
    admin = Redis.from_url(single_redis_url)
    user = f"narrow-{uuid.uuid4().hex[:8]}"
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["m:*"],
        commands=["-@all", "+ping", "+evalsha", "+eval", "+script|load", "+hgetall", "+multi"],
    )
    client = Redis.from_url(single_redis_url, username=user, password="pw")
    store = RedisStore(client)
    now = datetime.now(UTC)
    try:
        with pytest.raises(Misconfigured, match=r"smembers.*docs/redis-acl\.md"):
            await store.bookkeeping(tenant, "s1", now)  # a plain command (in a pipeline)
        with pytest.raises(Misconfigured, match=r"can't run this command.*docs/redis-acl\.md"):
            await store.erase(tenant, "s1", now)  # a command inside a script
        assert await store.load(tenant, "s1") is None  # what the rule grants still works
    finally:
        await client.aclose()
        await admin.acl_deluser(user)
        await admin.aclose()

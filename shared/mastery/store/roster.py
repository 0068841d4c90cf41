"""Reads over many students of a tenant: who is in a class, who scores lowest, their days.

Built on ``RedisStore``'s connection and deadline; what ``find_students_at_risk`` (and
any other per-cohort scan) needs, each in one round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.store import keys
from mastery.store.records import as_bytes
from mastery.store.repository import StudentDays

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mastery.store.repository import RedisStore

__all__ = ["cache_predictions", "class_members", "days_of_many", "lowest_mastery"]


async def class_members(store: RedisStore, tenant: str, class_id: str) -> list[str]:
    """The students in the class's cohort index, by id (may name students since expired)."""
    names = await store.io(store.client.hkeys(keys.class_index(tenant, class_id)))
    return sorted(as_bytes(n).decode() for n in names)


async def lowest_mastery(store: RedisStore, tenant: str, count: int) -> list[str]:
    """The ``count`` students of the tenant with the lowest mastery, lowest first."""
    key = keys.tenant_index(tenant, "mastery")
    names = await store.io(store.client.zrange(key, 0, count - 1))
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


async def days_of_many(
    store: RedisStore, tenant: str, students: Sequence[str]
) -> list[StudentDays | None]:
    """``RedisStore.days_of(..., with_prediction=True)`` for each student, in one MULTI/EXEC.

    One transaction, so each student's version, days and cached prediction belong together.
    Spans hash slots like ``load_many``: not Redis Cluster safe as is.
    """
    if not students:
        return []
    async with store.client.pipeline(transaction=True) as pipe:
        for s in students:
            pipe.hmget(keys.state(tenant, s), ["version", "classes"])
            pipe.get(keys.days(tenant, s))
            pipe.get(keys.prediction(tenant, s))
        replies = await store.io(pipe.execute())
    out: list[StudentDays | None] = []
    for i in range(len(students)):
        (version, classes), blob, cached = replies[3 * i : 3 * i + 3]
        if version is None:
            out.append(None)
            continue
        names = as_bytes(classes).decode()
        out.append(
            StudentDays(
                version=int(version),
                classes=frozenset(names.split(",")) if names else frozenset(),
                packed_days=as_bytes(blob),
                cached_prediction=as_bytes(cached) or None,
            )
        )
    return out


async def cache_predictions(
    store: RedisStore, tenant: str, entries: Sequence[tuple[str, bytes]], ttl_s: int
) -> None:
    """``RedisStore.cache_prediction`` for several students, in one round trip."""
    if not entries:
        return
    async with store.client.pipeline(transaction=False) as pipe:
        for student, entry in entries:
            pipe.set(keys.prediction(tenant, student), entry, ex=ttl_s)
        await store.io(pipe.execute())

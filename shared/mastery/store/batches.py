"""Batch runs in Redis: the request and its status, and one result per student.

    m:{<tenant>}:batch:<id>            hash  request (ids, caller, priority, deadline), status,
                                             times, and once final: counts and summary
    m:{<tenant>}:batch:<id>:results    hash  student id -> result document (JSON)

Results are keyed by student, so a chunk written twice (a worker that crashed after
writing it, or two workers racing over one batch) leaves one result per student:
progress is ``HLEN`` of the results, never a counter that a retry could inflate.
Both keys expire ``ttl_s`` (24 h) after the last write; the final write restarts it.

The final counts and summary are figures of the stored results, which an erasure can
change (its student becomes ``not_found``) while a run finishes or after. Both are
computed from a read of the results and written only if the record's ``rev``, bumped by
every write of results or figures, is still the one read: otherwise read again. So the
figures are always those of the results stored, whichever of the two comes first.

A final record is closed: the first finish wins (a later one writes nothing), and no
result is stored into it after (a run's chunk that comes late is refused, the run
stops), so a run, a second worker and a status read finishing a batch whose worker
stopped cannot leave figures that are not those of the stored results. Students not
reached get their ``timeout`` in the finish itself, only if they still have no result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import orjson

from mastery.domain.batch import BatchStatus, Priority
from mastery.errors import Unavailable
from mastery.policy import Role
from mastery.ports import BatchRecord
from mastery.store import keys
from mastery.store.scripts import Script

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from mastery.ports import Figures
    from mastery.store.connection import RedisConnection

__all__ = ["BatchStore"]

# Moves a queued batch to running; returns the status it had (nil: no such batch).
_START = Script("""
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
end
return status
""")


# Stores a chunk's results (ARGV[4..]: student, result, ...) except those of students
# erased at or after ARGV[2] (ms; -1: no check): their results were read before the
# erasure and would bring the data back. Keeps batch ARGV[3] in the live index as long as
# the results (by the time of this write: the index is pruned by it). Returns the
# students refused; nil, storing nothing, if the batch is final (its figures are those of
# the results it has).
_SAVE = Script("""
local results, tombstones, record, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status = redis.call('HGET', record, 'status')
if status == 'done' or status == 'failed' then return false end
local ttl, since = ARGV[1], tonumber(ARGV[2])
local check = since >= 0 and redis.call('EXISTS', tombstones) == 1
local refused, fields = {}, {}
for i = 4, #ARGV, 2 do
  local erased = check and redis.call('ZSCORE', tombstones, ARGV[i])
  if erased and tonumber(erased) >= since then
    refused[#refused + 1] = ARGV[i]
  else
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  if #fields >= 1000 then  -- unpack() has a limit; chunks may be large
    redis.call('HSET', results, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then redis.call('HSET', results, unpack(fields)) end
redis.call('EXPIRE', results, ttl)
local now = redis.call('TIME')
redis.call('ZADD', live, 'GT', now[1] * 1000 + math.floor(now[2] / 1000), ARGV[3])
redis.call('EXPIRE', live, ttl)
if redis.call('EXISTS', record) == 1 then redis.call('HINCRBY', record, 'rev', 1) end
return refused
""")

# Writes the record's final fields (ARGV[6 .. 5 + ARGV[5]]: field, value, ...) and the
# results after them (student, result, ...: the students not reached) if its revision is
# still ARGV[1], the one of the results they were computed from; keeps both keys ARGV[2] s
# from now, and batch ARGV[4] in the live index by its finishing time ARGV[3].
# 1: written; 0: read again; -1: nothing written, the batch is final already or gone.
_FINISH = Script("""
local record, results, live = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', record, 'status')
if not status or status == 'done' or status == 'failed' then return -1 end
if (redis.call('HGET', record, 'rev') or '0') ~= ARGV[1] then return 0 end
local ttl, last = ARGV[2], 5 + tonumber(ARGV[5])
for i = last + 1, #ARGV, 2 do redis.call('HSET', results, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', record, unpack(ARGV, 6, last))
redis.call('HINCRBY', record, 'rev', 1)
redis.call('EXPIRE', record, ttl)
redis.call('EXPIRE', results, ttl)
redis.call('ZADD', live, ARGV[3], ARGV[4])
redis.call('EXPIRE', live, ttl)
return 1
""")

# Puts a stand-in (ARGV[3]) in place of student ARGV[2]'s result and, for a final batch,
# its new figures (ARGV[4..]: field, value, ...), if the revision is still ARGV[1].
# 1: done; 0: no result to replace; -1: another write came between, read again.
_STAND_IN = Script("""
local record, results = KEYS[1], KEYS[2]
if (redis.call('HGET', record, 'rev') or '0') ~= ARGV[1] then return -1 end
if not redis.call('HGET', results, ARGV[2]) then return 0 end
redis.call('HSET', results, ARGV[2], ARGV[3])
if #ARGV > 3 then redis.call('HSET', record, unpack(ARGV, 4)) end
if redis.call('EXISTS', record) == 1 then redis.call('HINCRBY', record, 'rev', 1) end
return 1
""")

# A read and the conditional write that depends on it, tried at most this often: each
# failure means another write to the batch came between (a chunk, an erasure).
_ATTEMPTS = 16


class BatchStore:
    """Batch records over the shared Redis connection (its timeouts and script loading)."""

    def __init__(self, redis: RedisConnection, ttl_s: int = 86_400) -> None:
        self._store = redis
        self._redis = redis.client
        self._ttl_s = ttl_s

    async def create(self, record: BatchRecord) -> None:
        key, live = keys.batch(record.tenant, record.batch_id), keys.batches(record.tenant)
        async with self._store.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_fields(record))
            pipe.expire(key, self._ttl_s)
            # The tenant's live batches, so an erasure can reach their results; each by
            # its last write (``finish`` renews it), as its keys' TTLs run from there.
            pipe.zadd(live, {record.batch_id: record.submitted_at})
            pipe.zremrangebyscore(live, "-inf", f"({record.submitted_at - self._ttl_s * 1000}")
            pipe.expire(live, self._ttl_s)
            await self._store.io(pipe.execute())

    async def forget(
        self,
        tenant: str,
        student: str,
        stand_in: bytes,
        figures: Callable[[Mapping[str, bytes]], Figures],
    ) -> int:
        """Put ``stand_in`` (a ``not_found``) in place of ``student``'s result in every live
        batch (erasure); how many held another. A final batch gets the ``figures`` of its
        results with the stand-in in the same atomic step.

        Raises:
            Unavailable: Redis is down, or the batch changed under every attempt.
        """
        ids = await self._live(tenant)
        if not ids:
            return 0
        async with self._store.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hget(keys.batch_results(tenant, batch_id), student)
            held = await self._store.io(pipe.execute())
        replaced = 0
        for batch_id, result in zip(ids, held, strict=True):
            if result is not None and _bytes(result) != stand_in:
                replaced += await self._stand_in(tenant, batch_id, student, stand_in, figures)
        return replaced

    async def _stand_in(
        self,
        tenant: str,
        batch_id: str,
        student: str,
        stand_in: bytes,
        figures: Callable[[Mapping[str, bytes]], Figures],
    ) -> int:
        key_list = [keys.batch(tenant, batch_id), keys.batch_results(tenant, batch_id)]
        for _ in range(_ATTEMPTS):
            rev, status, stored = await self._snapshot(tenant, batch_id)
            args: list[Any] = [rev, student, stand_in]
            if status is not None and BatchStatus(status).final:
                args += _figure_fields(figures({**stored, student: stand_in}))
            done = int(await self._store.run(_STAND_IN, key_list, args))
            if done >= 0:
                return done
        raise Unavailable(f"redis: batch {batch_id} changed under {_ATTEMPTS} erasure attempts")

    async def _snapshot(
        self, tenant: str, batch_id: str
    ) -> tuple[str, str | None, dict[str, bytes]]:
        """The record's revision and status, and the results, as one atomic read."""
        async with self._store.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.batch(tenant, batch_id), "rev", "status")
            pipe.hgetall(keys.batch_results(tenant, batch_id))
            (rev, status), raw = await self._store.io(pipe.execute())
        stored = {_text(k): _bytes(v) for k, v in raw.items()}
        return (_text(rev) if rev else "0"), (_text(status) if status else None), stored

    async def _live(self, tenant: str) -> list[str]:
        """The ids of the tenant's batches whose results are kept."""
        ids = await self._store.io(self._redis.zrange(keys.batches(tenant), 0, -1))
        return [_text(cast("bytes", i)) for i in ids or ()]

    async def delete(self, tenant: str, batch_id: str) -> None:
        key = keys.batch(tenant, batch_id)
        await self._store.io(self._redis.delete(key, keys.batch_results(tenant, batch_id)))

    async def get(self, tenant: str, batch_id: str) -> BatchRecord | None:
        raw = await self._store.io(self._redis.hgetall(keys.batch(tenant, batch_id)))
        return _parse(tenant, batch_id, raw) if raw else None

    async def get_with_progress(self, tenant: str, batch_id: str) -> tuple[BatchRecord | None, int]:
        """The record and how many students have a result, in one round trip."""
        async with self._store.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.batch(tenant, batch_id))
            pipe.hlen(keys.batch_results(tenant, batch_id))
            raw, done = await self._store.io(pipe.execute())
        return (_parse(tenant, batch_id, raw) if raw else None), int(done)

    async def start(self, tenant: str, batch_id: str, now_ms: int) -> BatchStatus | None:
        """Mark a queued batch running; returns the status it had (``None``: no such batch)."""
        key = keys.batch(tenant, batch_id)
        status = await self._store.run(_START, [key], [now_ms])
        return BatchStatus(_text(status)) if status else None

    async def finished_students(self, tenant: str, batch_id: str) -> set[str]:
        raw = await self._store.io(self._redis.hkeys(keys.batch_results(tenant, batch_id)))
        return {_text(k) for k in raw}

    async def save_results(
        self,
        tenant: str,
        batch_id: str,
        results: Mapping[str, bytes],
        erased_since: int | None = None,
    ) -> list[str] | None:
        """Store these students' results, atomically (a chunk is all there or not at all).

        With ``erased_since`` (ms), the results of students erased at or after it are
        not stored; returns those students. ``None``: the batch is final (another run or
        a status read finished it), nothing was stored.
        """
        if not results:
            return []
        since = -1 if erased_since is None else erased_since
        args: list[str | bytes | int] = [self._ttl_s, since, batch_id]
        for student, result in results.items():
            args += (student, result)
        key_list = [
            keys.batch_results(tenant, batch_id),
            keys.erased(tenant),
            keys.batch(tenant, batch_id),
            keys.batches(tenant),
        ]
        refused = await self._store.run(_SAVE, key_list, args)
        return None if refused is None else [_text(s) for s in refused]

    async def results_of(self, tenant: str, student: str) -> dict[str, bytes]:
        """``student``'s result in every live batch, by batch id (GDPR export)."""
        ids = await self._live(tenant)
        if not ids:
            return {}
        async with self._store.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hget(keys.batch_results(tenant, batch_id), student)
            found = await self._store.io(pipe.execute())
        return {i: _bytes(r) for i, r in zip(ids, found, strict=True) if r is not None}

    async def results(self, tenant: str, batch_id: str, order: Sequence[str]) -> list[bytes]:
        """The stored results of ``order``'s students, in that order (missing ones left out)."""
        raw = await self._store.io(self._redis.hgetall(keys.batch_results(tenant, batch_id)))
        by_id = {_text(k): _bytes(v) for k, v in raw.items()}
        return [by_id[s] for s in order if s in by_id]

    async def finish(
        self,
        tenant: str,
        batch_id: str,
        *,
        status: BatchStatus,
        finished_at: int,
        figures: Callable[[Mapping[str, bytes]], Figures],
        reason: str | None = None,
        unreached: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Write the final status and the ``figures`` of the stored results (student ->
        JSON), unless a write came between the read and the write (then read again); both
        keys are kept ``ttl_s`` from now, and the batch stays in the live index as long
        (an erasure reaches its results till then).

        ``unreached``: the result (a ``timeout``) of each student the run did not reach,
        stored in the same step for those that still have none (one stored meanwhile is
        kept) and counted with the rest. False: the batch was final already (another run
        or a status read finished it first) or is gone; nothing was written.

        Raises:
            Unavailable: Redis is down, or the batch changed under every attempt.
        """
        key, results = keys.batch(tenant, batch_id), keys.batch_results(tenant, batch_id)
        key_list = [key, results, keys.batches(tenant)]
        for _ in range(_ATTEMPTS):
            rev, current, stored = await self._snapshot(tenant, batch_id)
            if current is None or BatchStatus(current).final:
                return False
            added = {s: r for s, r in (unreached or {}).items() if s not in stored}
            fields: list[str | bytes | int] = ["status", status.value, "finished_at", finished_at]
            fields += _figure_fields(figures({**stored, **added}))
            if reason:
                fields += ("reason", reason)
            args = [rev, self._ttl_s, finished_at, batch_id, len(fields), *fields]
            for student, result in added.items():
                args += (student, result)
            written = int(await self._store.run(_FINISH, key_list, args))
            if written:
                return written > 0
        raise Unavailable(f"redis: batch {batch_id} changed under {_ATTEMPTS} attempts to finish")


def _figure_fields(figures: Figures) -> list[str | bytes | int]:
    succeeded, failed, summary = figures
    return ["succeeded", succeeded, "failed", failed, "summary", orjson.dumps(summary)]


def _fields(record: BatchRecord) -> dict[str, str | bytes]:
    """A new record's hash fields (the run adds its own as it goes)."""
    return {
        "status": record.status.value,
        "priority": record.priority.value,
        "student_ids": orjson.dumps(record.student_ids),
        "submitted_by": record.submitted_by,
        "role": record.role.value,
        "classes": ",".join(sorted(record.classes)),
        "submitted_at": str(record.submitted_at),
        "deadline_at": str(record.deadline_at),
    }


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(tenant: str, batch_id: str, raw: Mapping[bytes | str, bytes | str]) -> BatchRecord:
    f = {_text(k): _text(v) for k, v in raw.items()}

    def opt_int(name: str) -> int | None:
        return int(f[name]) if name in f else None

    classes = f.get("classes", "")
    return BatchRecord(
        batch_id=batch_id,
        tenant=tenant,
        priority=Priority(f["priority"]),
        student_ids=tuple(orjson.loads(f["student_ids"])),
        submitted_by=f["submitted_by"],
        role=Role(f["role"]),
        classes=frozenset(classes.split(",")) if classes else frozenset(),
        submitted_at=int(f["submitted_at"]),
        deadline_at=int(f["deadline_at"]),
        status=BatchStatus(f["status"]),
        started_at=opt_int("started_at"),
        finished_at=opt_int("finished_at"),
        succeeded=opt_int("succeeded"),
        failed=opt_int("failed"),
        summary=orjson.loads(f["summary"]) if "summary" in f else None,
        reason=f.get("reason"),
    )

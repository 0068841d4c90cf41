-- Erase a student, atomically: delete their keys, leave every cohort index, drop their
-- level changes not yet published, and leave a tombstone so that a replayed or late event
-- older than the erasure is refused by apply.lua instead of bringing the data back.
-- (cohort.lua is prepended.)
--
-- KEYS: the tenant's keys (cohort.lua), then every key of the student
--       (mastery.store.keys.student_keys)
-- ARGV: tenant_prefix, student_id, now_ms, ttl_s
-- Returns: {how many of the student's keys existed (0: nothing was held; erasing again is
-- harmless), the time (ms) through which their events are erased: now_ms, or the newest
-- event the state held when it is stamped later (an event may be up to max_clock_skew
-- ahead of the clock that applied it: delivered again, it must be refused too), or an
-- earlier erasure's when later still}.
local prefix, student, now_ms, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local last_at = tonumber(redis.call('HGET', KEYS[TENANT_KEYS + 1], 'last_at') or '0')
local through = math.max(now_ms, math.ceil(last_at * 1000))  -- stored to the microsecond
local deltas = {}
forget(prefix, student, deltas)
flush_sums(deltas, ttl)
local deleted = redis.call('DEL', unpack(KEYS, TENANT_KEYS + 1))
-- The student's level changes not yet published (the outbox holds notes only while the
-- broker is out of reach): dropped, or the tenant's next batch would announce them after
-- the erasure.
for _, entry in ipairs(redis.call('XRANGE', TK.outbox, '-', '+')) do
  if cjson.decode(entry[2][2]).student_id == student then
    redis.call('XDEL', TK.outbox, entry[1])
  end
end
-- A tombstone must outlive the window only: older events are refused at the door anyway.
local tombstones = TK.erased
-- Never moved back: an erasure sent again (to complete one cut off) finds no state, and
-- must not let through the events the first one erased.
redis.call('ZADD', tombstones, 'GT', through, student)
through = tonumber(redis.call('ZSCORE', tombstones, student))
redis.call('ZREMRANGEBYSCORE', tombstones, '-inf', '(' .. string.format('%d', now_ms - ttl * 1000))
redis.call('EXPIRE', tombstones, ttl)
return {deleted, through}

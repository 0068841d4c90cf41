-- Erase a student, atomically: delete their keys, leave every cohort index, drop their
-- level changes not yet published, and leave a tombstone so that a replayed or late event
-- older than the erasure is refused by apply.lua instead of bringing the data back.
-- (cohort.lua is prepended.)
--
-- KEYS: the tenant's keys (cohort.lua), then every key of the student
--       (mastery.store.keys.student_keys)
-- ARGV: tenant_prefix, student_id, now_ms, ttl_s
-- Returns: how many of the student's keys existed (0: nothing was held; erasing again is
-- harmless).
local prefix, student, now_ms, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
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
redis.call('ZADD', tombstones, now_ms, student)
redis.call('ZREMRANGEBYSCORE', tombstones, '-inf', '(' .. string.format('%d', now_ms - ttl * 1000))
redis.call('EXPIRE', tombstones, ttl)
return deleted

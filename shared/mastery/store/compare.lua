-- A student's place in one cohort, in one call (cohort.lua is prepended). Members whose
-- data has expired are pruned first, so nothing older than the window is counted.
--
-- ARGV: tenant_prefix, scope ('t' or a class id), student_id, now_s, ttl_s
-- Returns, for the tenant: {size, rows}: one row per METRICS entry, {student, below,
--   equal, low_middle, high_middle, total} in units (mastery.domain.cohort.MetricFigures),
--   rows empty when the student is not in the index; O(log n) in the tenant's size.
-- For a class: {size, members}: the class hash as a flat list (student, 'u,u,u,u,u', ...).
local prefix, scope, student = ARGV[1], ARGV[2], ARGV[3]
local now_s, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local deltas = {}
prune(prefix, now_s - ttl, deltas)
flush_sums(deltas, ttl)

if scope ~= 't' then
  local members = redis.call('HGETALL', class_key(prefix, scope))
  return {#members / 2, members}
end

local size = redis.call('ZCARD', tenant_key(prefix, 'mastery'))
local sums = redis.call('HMGET', tenant_key(prefix, 'sum'), unpack(METRICS))
local low, high = math.floor((size - 1) / 2), math.floor(size / 2)
local rows = {}
for i, metric in ipairs(METRICS) do
  local key = tenant_key(prefix, metric)
  local units = redis.call('ZSCORE', key, student)
  if not units then return {size, {}} end
  local lo = redis.call('ZRANGE', key, low, low, 'WITHSCORES')
  local hi = redis.call('ZRANGE', key, high, high, 'WITHSCORES')
  rows[i] = {
    tonumber(units),
    redis.call('ZCOUNT', key, '-inf', '(' .. units),
    redis.call('ZCOUNT', key, units, units),
    tonumber(lo[2]),
    tonumber(hi[2]),
    tonumber(sums[i] or '0'),
  }
end
return {size, rows}

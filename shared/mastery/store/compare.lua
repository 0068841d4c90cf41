-- A student's place in one cohort, in one call (cohort.lua is prepended). Members whose
-- data has expired are pruned first, so nothing older than the window is counted.
--
-- KEYS: the tenant's keys (cohort.lua).
-- ARGV: tenant_prefix, class id ('' for the whole tenant), student_id, now_s, ttl_s
-- Returns: {size, rows}: one row per METRICS entry, {student, below, equal, low_middle,
--   high_middle, total} in units (mastery.domain.cohort.MetricFigures); rows is empty
--   when the student is not in the cohort. The tenant's figures come from its sorted
--   sets, O(log n); a class is small and read whole.
local prefix, class, student = ARGV[1], ARGV[2], ARGV[3]
local now_s, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local deltas = {}
prune(prefix, now_s - ttl, deltas)
flush_sums(deltas, ttl)

local rows = {}
if class ~= '' then
  local raw = redis.call('HGETALL', class_key(prefix, class))
  local size, columns, mine = #raw / 2, {{}, {}, {}, {}, {}}, nil
  for i = 1, #raw, 2 do
    local units = {}
    for u in string.gmatch(raw[i + 1], '[^,]+') do units[#units + 1] = tonumber(u) end
    if raw[i] == student then mine = units end
    for m = 1, #METRICS do columns[m][#columns[m] + 1] = units[m] end
  end
  if not mine then return {size, {}} end
  local low, high = math.floor((size - 1) / 2) + 1, math.floor(size / 2) + 1
  for m = 1, #METRICS do
    local values, below, equal, total = columns[m], 0, 0, 0
    table.sort(values)
    for _, v in ipairs(values) do
      if v < mine[m] then below = below + 1 elseif v == mine[m] then equal = equal + 1 end
      total = total + v
    end
    rows[m] = {mine[m], below, equal, values[low], values[high], total}
  end
  return {size, rows}
end

local size = redis.call('ZCARD', TK.index[1])
local sums = redis.call('HMGET', TK.sum, unpack(METRICS))
local low, high = math.floor((size - 1) / 2), math.floor(size / 2)
for i = 1, #METRICS do
  local key = TK.index[i]
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

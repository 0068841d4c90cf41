-- Cohort indexes, shared by apply.lua, erase.lua and compare.lua (prepended to each).
--
-- With the tenant prefix P = 'm:{<tenant>}:':
--   P..'cohort:t:'..metric   zset  student -> units (score x 10000, an integer), per metric
--   P..'cohort:t:sum'        hash  metric -> sum of that zset's units (the mean in O(1))
--   P..'cohort:c:'..class    hash  student -> their units, 'm,c1,c2,c3,c4' (classes are
--                                  small: a comparison reads the whole class)
--   P..'cohort:classes'      hash  student -> their classes, comma-separated
--   P..'active'              zset  student -> when their state was last written (s)
-- Units are integers, so sums stay exact however often a student moves.
-- mastery.store.keys names the same keys for reads and tests.

local METRICS = {'mastery', 'completion', 'quiz', 'quality', 'consistency'}

local function tenant_key(prefix, metric) return prefix .. 'cohort:t:' .. metric end

-- A tenant's index keys, built once per script call (a batch touches them per student).
local tenant_keys_cache = {}
local function tenant_keys(prefix)
  local found = tenant_keys_cache[prefix]
  if not found then
    found = {sum = tenant_key(prefix, 'sum')}
    for i, metric in ipairs(METRICS) do found[i] = tenant_key(prefix, metric) end
    tenant_keys_cache[prefix] = found
  end
  return found
end
local function class_key(prefix, class) return prefix .. 'cohort:c:' .. class end

-- Sum deltas are gathered per tenant and written once per call (flush_sums).
local function add_delta(deltas, prefix, i, d)
  if d == 0 then return end
  local key = tenant_keys(prefix).sum
  local row = deltas[key]
  if not row then row = {0, 0, 0, 0, 0}; deltas[key] = row end
  row[i] = row[i] + d
end

-- Put a student's units (one per METRICS entry) in the tenant index; old: theirs, or nil.
local function tenant_set(prefix, student, old, new, deltas, touched)
  local index = tenant_keys(prefix)
  for i = 1, #METRICS do
    if old == nil or old[i] ~= new[i] then
      redis.call('ZADD', index[i], new[i], student)
      add_delta(deltas, prefix, i, new[i] - (old and old[i] or 0))
    end
  end
  touched[prefix] = true  -- its index keys' TTLs are refreshed once per call
end

local function class_set(prefix, class, student, new, touched)
  local key = class_key(prefix, class)
  redis.call('HSET', key, student, table.concat(new, ','))
  touched[key] = true
end

-- Remove a student from every index they are in: when erased, or when their data expired.
local function forget(prefix, student, deltas)
  for i, metric in ipairs(METRICS) do
    local key = tenant_key(prefix, metric)
    local units = redis.call('ZSCORE', key, student)
    if units then
      redis.call('ZREM', key, student)
      add_delta(deltas, prefix, i, -tonumber(units))
    end
  end
  local classes = redis.call('HGET', prefix .. 'cohort:classes', student)
  for class in string.gmatch(classes or '', '[^,]+') do
    redis.call('HDEL', class_key(prefix, class), student)
  end
  redis.call('HDEL', prefix .. 'cohort:classes', student)
  redis.call('ZREM', prefix .. 'active', student)
end

-- Forget students whose state has expired (not written since cutoff_s); bounded per call.
local function prune(prefix, cutoff_s, deltas)
  local gone = redis.call('ZRANGEBYSCORE', prefix .. 'active', '-inf', '(' .. cutoff_s,
    'LIMIT', 0, 1000)
  for _, student in ipairs(gone) do forget(prefix, student, deltas) end
  return #gone
end

local function flush_sums(deltas, ttl)
  for key, row in pairs(deltas) do
    for i, d in ipairs(row) do
      if d ~= 0 then redis.call('HINCRBY', key, METRICS[i], d) end
    end
    redis.call('EXPIRE', key, ttl, 'NX')  -- a sum never outlives its index by much
  end
end

-- Cohort indexes, shared by apply.lua, erase.lua and prune.lua (prepended to each).
--
-- Per tenant prefix P = 'm:{<tenant>}:' and scope S ('t' for the tenant, 'c:<class>'):
--   P..'cohort:'..S..':'..metric   zset  student -> units (score x 10000, an integer)
--   P..'cohort:'..S..':sum'        hash  metric -> sum of that zset's units (mean in O(1))
--   P..'cohort:classes'            hash  student -> their classes, comma-separated
--   P..'active'                    zset  student -> when their state was last written (s)
-- Units are integers, so sums stay exact however often a student moves.
-- The layout is mirrored by mastery.store.keys (tests read it back through those names).

local METRICS = {'mastery', 'completion', 'quiz', 'quality', 'consistency'}

local function scopes_of(classes)
  local scopes = {'t'}
  for class in string.gmatch(classes or '', '[^,]+') do scopes[#scopes + 1] = 'c:' .. class end
  return scopes
end

local function index_key(prefix, scope, metric)
  return prefix .. 'cohort:' .. scope .. ':' .. metric
end

-- Sum deltas are gathered per sum key and written once per batch (flush_sums).
local function add_delta(deltas, prefix, scope, i, d)
  if d == 0 then return end
  local key = index_key(prefix, scope, 'sum')
  local row = deltas[key]
  if not row then row = {0, 0, 0, 0, 0}; deltas[key] = row end
  row[i] = row[i] + d
end

-- Put a student's units (one per METRICS entry) in a scope; old: their units there, or nil.
local function index_set(prefix, scope, student, old, new, deltas, touched)
  for i, metric in ipairs(METRICS) do
    local key = index_key(prefix, scope, metric)
    if old == nil or old[i] ~= new[i] then
      redis.call('ZADD', key, new[i], student)
      add_delta(deltas, prefix, scope, i, new[i] - (old and old[i] or 0))
    end
    touched[key] = true
  end
  touched[index_key(prefix, scope, 'sum')] = true
end

-- Remove a student from every index they are in: when erased, or when their data expired.
local function forget(prefix, student, deltas)
  local classes = redis.call('HGET', prefix .. 'cohort:classes', student)
  for _, scope in ipairs(scopes_of(classes or '')) do
    for i, metric in ipairs(METRICS) do
      local key = index_key(prefix, scope, metric)
      local units = redis.call('ZSCORE', key, student)
      if units then
        redis.call('ZREM', key, student)
        add_delta(deltas, prefix, scope, i, -tonumber(units))
      end
    end
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

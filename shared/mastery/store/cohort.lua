-- A tenant's keys and cohort indexes, shared by apply.lua, erase.lua and compare.lua
-- (prepended to each). Every call concerns one tenant, whose keys share one hash slot.
--
-- KEYS[1..11] are the tenant's keys, as mastery.store.keys.tenant_keys lists them:
--   audit, outbox, erased (tombstones), active (student -> last write, s),
--   cohort:classes (student -> their classes, comma-separated),
--   cohort:t:sum (metric -> sum of that index's units: the mean in O(1)),
--   cohort:t:<metric> for each METRICS entry (zset student -> units, score x 10000).
-- A class's index, prefix..'cohort:c:'..class (hash student -> 'm,c1,c2,c3,c4'; classes
-- are small: a comparison reads the whole class), is named from the student's classes,
-- under the same hash tag. Units are integers, so sums stay exact however often a
-- student moves.

local METRICS = {'mastery', 'completion', 'quiz', 'quality', 'consistency'}
local TK = {audit = KEYS[1], outbox = KEYS[2], erased = KEYS[3], active = KEYS[4],
  classes = KEYS[5], sum = KEYS[6], index = {KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]}}
local TENANT_KEYS = 11

local function class_key(prefix, class) return prefix .. 'cohort:c:' .. class end

-- Sum deltas are gathered and written once per call (flush_sums).
local function add_delta(deltas, i, d)
  if d ~= 0 then deltas[i] = (deltas[i] or 0) + d end
end

-- Put a student's units (one per METRICS entry) in the tenant index; old: theirs, or nil.
-- The writes are gathered in ``pending`` and sent by flush_sets, one command per key.
local function tenant_set(student, old, new, deltas, pending)
  for i = 1, #METRICS do
    if old == nil or old[i] ~= new[i] then
      local z = pending.index[i]
      z[#z + 1] = new[i]
      z[#z + 1] = student
      add_delta(deltas, i, new[i] - (old and old[i] or 0))
    end
  end
end

local function class_set(prefix, class, student, new, pending)
  local key = class_key(prefix, class)
  local h = pending.classes[key]
  if not h then h = {}; pending.classes[key] = h end
  h[#h + 1] = student
  h[#h + 1] = table.concat(new, ',')
end

local function pending_sets()
  return {index = {{}, {}, {}, {}, {}}, classes = {}}
end

-- A command on one key over a long flat list of arguments, in chunks of 2,000 (pairs
-- stay whole): unpack is bounded by Lua's stack (about 8,000 values), and a command that
-- failed for it midway through a script would leave the writes before it in place. The
-- replies, concatenated (HMGET's values, in order).
local function in_chunks(command, key, flat)
  if #flat <= 2000 then  -- nearly always: one command, its reply as it is
    return #flat > 0 and redis.call(command, key, unpack(flat)) or {}
  end
  local replies = {}
  for i = 1, #flat, 2000 do
    local r = redis.call(command, key, unpack(flat, i, math.min(i + 1999, #flat)))
    if type(r) == 'table' then
      for k = 1, #r do replies[#replies + 1] = r[k] end
    end
  end
  return replies
end

-- One ZADD per tenant index and one HSET per class index for a call's students (in
-- chunks), each class index's TTL renewed.
local function flush_sets(pending, ttl)
  for i = 1, #METRICS do in_chunks('ZADD', TK.index[i], pending.index[i]) end
  for key, flat in pairs(pending.classes) do
    in_chunks('HSET', key, flat)
    redis.call('EXPIRE', key, ttl)
  end
end

-- Remove a student from every index they are in: when erased, or when their data expired.
local function forget(prefix, student, deltas)
  for i = 1, #METRICS do
    local units = redis.call('ZSCORE', TK.index[i], student)
    if units then
      redis.call('ZREM', TK.index[i], student)
      add_delta(deltas, i, -tonumber(units))
    end
  end
  local classes = redis.call('HGET', TK.classes, student)
  for class in string.gmatch(classes or '', '[^,]+') do
    redis.call('HDEL', class_key(prefix, class), student)
  end
  redis.call('HDEL', TK.classes, student)
  redis.call('ZREM', TK.active, student)
end

-- Forget students whose state has expired (not written since cutoff_s); bounded per call.
local function prune(prefix, cutoff_s, deltas)
  local gone = redis.call('ZRANGEBYSCORE', TK.active, '-inf', '(' .. cutoff_s, 'LIMIT', 0, 1000)
  for _, student in ipairs(gone) do forget(prefix, student, deltas) end
  return #gone
end

local function flush_sums(deltas, ttl)
  local any = false
  for i, d in pairs(deltas) do
    if d ~= 0 then redis.call('HINCRBY', TK.sum, METRICS[i], d); any = true end
  end
  if any then redis.call('EXPIRE', TK.sum, ttl, 'NX') end  -- never outlives its index by much
end

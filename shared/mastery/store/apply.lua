-- Apply a batch of learning events atomically, each event at most once.
--
-- KEYS: every key the batch touches (state, days, seen, audit), referenced by index.
-- ARGV: now_ms, ttl_s, window_days, audit_maxlen, origin_s, the four component names in
--       Component order, then 13 fields per event:
--       state_i, days_i, seen_i, audit_i, event_hash, seen_expire_at, occurred_at_s,
--       component, area, weight, weight*score, class_id, audit_record
-- Returns: one outcome per event, 'applied' or 'duplicate'.
--
-- The arithmetic (decay weights, weighted values) comes precomputed from mastery.domain;
-- this script only adds sums, so events commute and any order gives the same state.
-- Sums are gathered per student in Lua first, so Redis sees one write per field per batch.
local now_ms, ttl, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local maxlen, origin = ARGV[4], tonumber(ARGV[5])
local comps = {ARGV[6], ARGV[7], ARGV[8], ARGV[9]}
local HEAD, F = 9, 13

local outcomes, students, order, expiring, audits = {}, {}, {}, {}, {}
for i = HEAD + 1, #ARGV, F do
  local seen, audit = KEYS[tonumber(ARGV[i + 2])], KEYS[tonumber(ARGV[i + 3])]
  local outcome = 'duplicate'
  if redis.call('SADD', seen, ARGV[i + 4]) == 1 then
    outcome = 'applied'
    expiring[seen] = ARGV[i + 5]
    local state = KEYS[tonumber(ARGV[i])]
    local st = students[state]
    if not st then
      st = {days = KEYS[tonumber(ARGV[i + 1])], sums = {}, n = 0, last = 0, classes = {}}
      students[state] = st
      order[#order + 1] = state
    end
    local at, c, area, w, wv, class = tonumber(ARGV[i + 6]), ARGV[i + 7], ARGV[i + 8],
      tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10]), ARGV[i + 11]
    local prefixes = {c}
    if area ~= '' then prefixes[2] = 'a:' .. c .. ':' .. area end
    for _, p in ipairs(prefixes) do
      local s = st.sums[p]
      if not s then s = {0, 0, 0}; st.sums[p] = s end
      s[1], s[2], s[3] = s[1] + wv, s[2] + w, s[3] + 1
    end
    if class ~= '' then st.classes[class] = true end
    if at > st.last then st.last = at end
    st.n = st.n + 1
  end
  redis.call('XADD', audit, 'MAXLEN', '~', maxlen, '*', 'outcome', outcome, 'event', ARGV[i + 12])
  audits[audit] = true
  outcomes[#outcomes + 1] = outcome
end
for seen, at in pairs(expiring) do redis.call('EXPIREAT', seen, at) end
-- Audit records live as long as the data they describe: trimmed by age, then by TTL.
local audit_cutoff = string.format('%d', tonumber(now_ms) - ttl * 1000)
for audit in pairs(audits) do
  redis.call('XTRIM', audit, 'MINID', '~', audit_cutoff)
  redis.call('EXPIRE', audit, ttl)
end

local snap_fields = {'last_at', 'classes'}
for _, c in ipairs(comps) do
  snap_fields[#snap_fields + 1] = c .. ':s'
  snap_fields[#snap_fields + 1] = c .. ':w'
end
for _, state in ipairs(order) do
  local st = students[state]
  for p, s in pairs(st.sums) do
    redis.call('HINCRBYFLOAT', state, p .. ':s', s[1])
    redis.call('HINCRBYFLOAT', state, p .. ':w', s[2])
    redis.call('HINCRBY', state, p .. ':n', s[3])
  end
  redis.call('HINCRBY', state, 'version', st.n)
  local cur = redis.call('HMGET', state, unpack(snap_fields))  -- sums now include this batch
  local last = math.max(tonumber(cur[1] or '0'), st.last)
  local classes = cur[2] or ''
  for class in pairs(st.classes) do
    if not string.find(',' .. classes .. ',', ',' .. class .. ',', 1, true) then
      classes = classes == '' and class or classes .. ',' .. class
    end
  end
  redis.call('HSET', state, 'last_at', string.format('%.6f', last), 'updated_at', now_ms,
    'classes', classes)
  redis.call('EXPIRE', state, ttl)

  -- One snapshot per student per day (the day of their newest event): component scores
  -- as 0..10000, 65535 when unobserved; records ascend by day, older than the window go.
  local v = {}
  for j = 1, #comps do
    local s, w = tonumber(cur[2 * j + 1] or '0'), tonumber(cur[2 * j + 2] or '0')
    v[j] = 65535
    if w > 0 then v[j] = math.max(0, math.min(10000, math.floor(10000 * s / w + 0.5))) end
  end
  local day = math.floor((last - origin) / 86400)
  local rec = struct.pack('<HHHHH', day, v[1], v[2], v[3], v[4])
  local blob = redis.call('GET', st.days) or ''
  local tail = #blob - 9
  if tail > 0 and struct.unpack('<H', blob, tail) == day then
    blob = string.sub(blob, 1, tail - 1) .. rec
  else
    blob = blob .. rec
  end
  local first = 1
  while first < #blob and struct.unpack('<H', blob, first) <= day - window do first = first + 10 end
  redis.call('SET', st.days, string.sub(blob, first), 'EX', ttl)
end
return outcomes

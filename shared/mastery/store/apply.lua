-- Apply one tenant's events of a batch atomically, each event at most once.
-- (cohort.lua and offsets.lua are prepended: the tenant's keys, the cohort index helpers,
-- the applied-offset checks.)
--
-- KEYS: the tenant's keys (cohort.lua: KEYS[1..11]), its applied-offsets hash (12), then
--       the student keys the events touch (state, days, seen, xapi), by index.
-- ARGV: now_ms, ttl_s, window_days, audit_maxlen, origin_s, the four component names in
--       Component order, their four weights, the levels as JSON [[name, floor], ...]
--       highest first, the class lapse in days (ScoringModel.class_lapse), the age in ms
--       of a leftover level-change note (event_writes.LEFTOVER_MS), the tenant prefix, the offset marks as JSON (offsets.lua; [] when the events do not come
--       from a consumer), then one JSON array with an array per
--       event: [state_i, days_i, seen_i, event_hash, seen_expire_at, occurred_at_s,
--        component, area, weight, weight*score, class_id, student_id,
--        event_id, day (mastery.domain.days.day_number), score units (score_units),
--        xapi_i (an xAPI statement's student xapi hash, 0 for a native event),
--        voided (a voiding: the event_hash of the statement it voids, else ''),
--        digest (an xAPI statement: its digest in hex, mastery.events.comparison, else ''),
--        mark (its partition's place in the offset marks, 0: none), offset (in it)],
--       then each event's audit record (ARGV[20..], in the same order)
--       (one JSON argument instead of 14 per event: packing arguments dominated the cost;
--       the audit records are arguments of their own: inside the JSON, cjson unescaping
--       them cost ~2 us per event, as much as all the other fields)
-- Returns {outcomes, changes, backlog, refused, written}, or {'moved', field, stored} when
-- the applied offsets are not what the caller expects (then nothing was written):
--   outcomes: one per event: 'applied', 'duplicate', or 'erased' (the student was erased
--     after the event happened: a replay or a late event must not bring data back), or
--     'rejected' (the student's day record of that component and day is full, DAY_MAX;
--     or an xAPI statement whose id the student holds for a statement that says
--     otherwise: not applied, not marked seen, audited with the reason; the caller
--     dead-letters it);
--     for xAPI statements also 'voiding' (a voiding that took effect: its target's
--     increment subtracted, or the target barred before it arrived) and 'voided' (a
--     statement already voided: refused);
--   changes: {outbox entry id, notification JSON} per student whose level this batch
--     changed; each is also in the tenant's outbox until it has been published;
--   backlog: 1 when the outbox holds a note older than 'leftover' ms by Redis's clock: one
--     a cut-off publish left (a crash, the broker away), for the caller to publish. A
--     fresher one is another writer's, about to be published by it: taking it too
--     announced it twice whenever two pods wrote one tenant's changes at once;
--   refused: per 'rejected' event, its place in the call (1-based) and the reason;
--   written: the offsets recorded, field, offset, ... : a partition's stops at its first
--     'rejected' event, read again by whoever resumes there until its dead letter (which
--     the caller publishes after this call) is out and a later write moves it on.
--
-- The arithmetic (decay weights, weighted values) comes precomputed from mastery.domain;
-- this script only adds sums, so events commute and any order gives the same state (an
-- xAPI voiding adds its statement's increment negated, or bars the statement if it comes
-- after: the same state either way, docs/xapi.md "Voiding").
-- Sums are gathered per student in Lua first, so each student costs one read and one write.
local now_ms, ttl, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local maxlen, origin = ARGV[4], tonumber(ARGV[5])
local comps = {ARGV[6], ARGV[7], ARGV[8], ARGV[9]}
local weights = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}
local levels, lapse, leftover = cjson.decode(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local prefix, marks, events = ARGV[17], cjson.decode(ARGV[18]), cjson.decode(ARGV[19])
local OFFSETS, FIRST, AUDIT = KEYS[TENANT_KEYS + 1], TENANT_KEYS + 1, 19
local tenant = string.sub(prefix, 4, -3)

local moved = offsets_moved(OFFSETS, marks)
if moved then return moved end

local comp_index = {}
for j, c in ipairs(comps) do comp_index[c] = j end

local outcomes, students, order, expiring, voidable = {}, {}, {}, {}, {}
local erased_at = {}
local tombstones = redis.call('EXISTS', TK.erased) == 1  -- whether the tenant has any

-- Add to a student's sums of one prefix (a component, or 'a:<component>:<area>').
local function add_sum(sums, p, wv, w, n)
  local s = sums[p]
  if s then s[1], s[2], s[3] = s[1] + wv, s[2] + w, s[3] + n
  else sums[p] = {wv, w, n} end
end

-- Gather one event's increment into its student's sums and day additions (read and
-- written once per student below). A voiding gathers the voided statement's increment
-- negated (n = -1), so the sums, counts and day records lose exactly what it added.
local function gather(state, days, student, c, area, w, wv, class, day, units, n, at, cause)
  local st = students[state]
  if not st then
    st = {days = days, sums = {}, n = 0, last = 0, classes = {}, student = student,
      day_adds = {}}
    students[state] = st
    order[#order + 1] = state
  end
  add_sum(st.sums, c, wv, w, n)
  if area ~= '' then add_sum(st.sums, 'a:' .. c .. ':' .. area, wv, w, n) end
  if class ~= '' and (st.classes[class] or -1) < day then st.classes[class] = day end
  local adds = st.day_adds[day]
  if not adds then adds = {}; st.day_adds[day] = adds end
  local j = comp_index[c]
  local a = adds[j]
  if a then a[1], a[2] = a[1] + n, a[2] + units else adds[j] = {n, units} end
  if at > st.last then st.last = at end
  st.n = st.n + 1
  st.cause = cause
end

-- Day records (mastery.store.records.parse_days reads them), oldest day first: per day
-- '<BH' (a mask of the components with events that day, the day since the origin), then
-- per component in the mask '<HI4' (events that day, the sum of their scores in units of
-- 1/10000), then the mask again, so that the newest record can be read from the end.
-- Days at or before the newest day less the window are dropped.
local POP = {[0] = 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4}  -- bits set in a mask

-- The offset of the newest record of a (non-empty) blob: read back from its trailing mask.
local function newest_at(blob)
  return #blob - 3 - 6 * POP[struct.unpack('<B', blob, #blob)]
end

local function unpack_record(blob, pos)
  local mask, day
  mask, day, pos = struct.unpack('<BH', blob, pos)
  local r = {}
  for j = 1, #comps do
    if math.floor(mask / 2 ^ (j - 1)) % 2 == 1 then
      local n, u
      n, u, pos = struct.unpack('<HI4', blob, pos)
      r[j] = {n, u}
    end
  end
  return day, r, pos + 1
end

local function pack_record(day, r)
  local mask, body = 0, {}
  for j = 1, #comps do
    if r[j] then
      mask = mask + 2 ^ (j - 1)
      body[#body + 1] = struct.pack('<HI4', r[j][1], r[j][2])
    end
  end
  if mask == 0 then return '' end  -- every event of the day voided: no record
  return struct.pack('<BH', mask, day) .. table.concat(body) .. struct.pack('<B', mask)
end

-- Additions may be negative (a voiding): a component left with no events is dropped.
local function add_to(r, adds)
  for j, a in pairs(adds) do
    local cur = r[j] or {0, 0}
    r[j] = {cur[1] + a[1], cur[2] + a[2]}
    if r[j][1] <= 0 then r[j] = nil end
  end
  return r
end

-- A student's day records, read once per call (by the first of their events checked, or
-- by update_days), kept as read: the blob, its newest record's offset (0: none) and day.
-- Nothing is parsed into tables before update_days: a call's students' tables would all
-- stay alive till its end, and the collector's walks through them cost more than reading.
local stored = {}  -- days key -> {blob, tail, last_day}

local function stored_days(days)
  local s = stored[days]
  if not s then
    s = {blob = redis.call('GET', days) or '', tail = 0, last_day = -1}
    if #s.blob > 0 then
      s.tail = newest_at(s.blob)
      s.last_day = select(2, struct.unpack('<BH', s.blob, s.tail))
    end
    stored[days] = s
  end
  return s
end

-- The offset of day's record (an older one than the newest: a backfill), or nil.
local function record_at(blob, day)
  local pos = 1
  while pos <= #blob do
    local mask, d = struct.unpack('<BH', blob, pos)
    if d >= day then return d == day and pos or nil end
    pos = pos + 4 + 6 * POP[mask]
  end
  return nil
end

-- The number of component j's events in the record at pos, read in place.
local function count_at(blob, pos, j)
  local mask = struct.unpack('<B', blob, pos)
  if math.floor(mask / 2 ^ (j - 1)) % 2 == 0 then return 0 end
  local at = pos + 3
  for k = 1, j - 1 do
    if math.floor(mask / 2 ^ (k - 1)) % 2 == 1 then at = at + 6 end
  end
  return (struct.unpack('<H', blob, at))
end

-- The records with a batch's additions (day -> component index -> {events, units}).
-- Events of the newest day or later (the usual case) touch only the blob's tail; an
-- older day (a backfill, a replay) rewrites it whole. Integer sums: any order, same blob.
local function update_days(s, day_adds)
  local days = {}
  for day in pairs(day_adds) do days[#days + 1] = day end
  table.sort(days)
  local parts = {}
  local blob, tail, last_day, last = s.blob, s.tail, -1, nil
  if tail > 0 then last_day, last = unpack_record(blob, tail) end
  if days[1] >= last_day then
    if days[1] == last_day then
      parts[1] = string.sub(blob, 1, tail - 1)
    else
      parts[1], last = blob, nil
    end
    for _, day in ipairs(days) do
      local r = (day == last_day) and last or {}
      parts[#parts + 1] = pack_record(day, add_to(r, day_adds[day]))
    end
  else
    local recs, pos = {}, 1
    while pos <= #blob do
      local day, r
      day, r, pos = unpack_record(blob, pos)
      recs[day] = r
    end
    for day, adds in pairs(day_adds) do recs[day] = add_to(recs[day] or {}, adds) end
    local all = {}
    for day in pairs(recs) do all[#all + 1] = day end
    table.sort(all)
    for _, day in ipairs(all) do parts[#parts + 1] = pack_record(day, recs[day]) end
  end
  local out = table.concat(parts)
  if out == '' then return out end
  -- The newest record's day (a voiding may have emptied the newest day of the batch).
  local newest = select(2, struct.unpack('<BH', out, newest_at(out)))
  local first = 1
  while first < #out do
    local mask, day = struct.unpack('<BH', out, first)
    if day > newest - window then break end
    first = first + 4 + 6 * POP[mask]
  end
  return string.sub(out, first)
end

-- An applied xAPI statement's entry in its student's xapi hash: 'c', then '<BHI4dd' (its
-- component's index, day, score units, weight, weight * score), then its digest (DIGEST
-- bytes), then its area ('a': the same without a digest, written before digests were
-- kept). A voided one's: 'v', then '<H' (its day, or the voiding's when it had not
-- arrived), then its digest if it was kept: refused when it arrives, and a second
-- voiding counts once.
local ENTRY, DIGEST = 23, 8  -- bytes of '<BHI4dd'; of a digest (keys.XAPI_DIGEST)
-- What the student's xAPI hash holds of a statement: 'c' (or 'a') applied, 'v' voided,
-- '' nothing. Its entries are per statement, whatever idempotency bucket the
-- statement's time falls in: a resend dated otherwise (a statement without a timestamp,
-- dated by each reader) is known there even when its bucket is another.
local function held(xkey, id)
  return redis.call('HGET', xkey, id) or ''
end

-- The digest of what an entry's statement said, or nil: not kept ('a', a tombstone).
local function digest_of(entry)
  local tag = string.sub(entry, 1, 1)
  if tag == 'c' then return string.sub(entry, 2 + ENTRY, 1 + ENTRY + DIGEST) end
  if tag == 'v' and #entry == 3 + DIGEST then return string.sub(entry, 4) end
  return nil
end

local function unhex(hex)
  return (string.gsub(hex, '..', function(h) return string.char(tonumber(h, 16)) end))
end
local CONFLICT = 'statement %s differs from the one held under its id: the first is kept'

local function void(xkey, e, state, days)
  local entry = redis.call('HGET', xkey, e[17])
  if entry and string.sub(entry, 1, 1) == 'v' then return 'duplicate' end
  local day = e[14]
  local kept = entry and digest_of(entry) or ''
  if entry then
    local j, units, w, wv
    j, day, units, w, wv = struct.unpack('<BHI4dd', entry, 2)
    local area = string.sub(entry, 2 + ENTRY + #kept)
    gather(state, days, e[12], comps[j], area, -w, -wv, '', day, -units, -1, 0, e[13])
  end
  redis.call('HSET', xkey, e[17], 'v' .. struct.pack('<H', day) .. kept)
  return 'voiding'
end

-- A day record counts a component's events in 16 bits ('<HI4'): the event that would
-- make it DAY_MAX + 1 is refused (the loop below), never wrapped.
local DAY_MAX = 65535  -- mastery.domain.days.DAY_MAX

-- Whether one more event of component j on day would overflow the student's day record:
-- what it holds and what this call adds to it so far (at most #events, so a count further
-- than that from the limit needs no look at the call's additions).
local in_call = #events  -- (once: the length operator is a search in Lua 5.1)
local function full(state, days, day, j)
  local s = stored[days] or stored_days(days)
  local pos = s.tail  -- the usual case: the newest day (or a later one: nothing held)
  if day ~= s.last_day then pos = day < s.last_day and record_at(s.blob, day) or nil end
  local n = pos and count_at(s.blob, pos, j) or 0
  if n + in_call < DAY_MAX then return false end
  local adds = students[state] and students[state].day_adds[day]
  return n + (adds and adds[j] and adds[j][1] or 0) >= DAY_MAX
end
local DAY_FULL = 'the student already has %d %s events on this day: a day record holds no more'

-- An erased student's event, refused: audited by its id and where it came from, not by
-- what it said (a replay or rebuild after the erasure must not put that back).
local FORGOTTEN_KEEPS = {'topic', 'partition', 'offset', 'at', 'event_id', 'tenant', 'student_id'}
local function forgotten(record)
  local doc, kept = cjson.decode(record), {}
  for _, k in ipairs(FORGOTTEN_KEEPS) do kept[k] = doc[k] end
  return cjson.encode(kept)
end
local refused = {}  -- per refused event: its place in the call, why
local stops = {}  -- per offset mark: the offset of its first refused event
local audit_id  -- the call's newest audit entry: a state it creates is born then (below)

for i, e in ipairs(events) do
  local state, days, seen = KEYS[FIRST + e[1]], KEYS[FIRST + e[2]], KEYS[FIRST + e[3]]
  local student = e[12]
  local xkey = e[16] > 0 and KEYS[FIRST + e[16]] or nil
  if erased_at[state] == nil then
    erased_at[state] = tombstones
      and tonumber(redis.call('ZSCORE', TK.erased, student) or '-1') or -1
  end
  local outcome = 'duplicate'
  local entry = (xkey and e[17] == '') and held(xkey, e[4]) or ''
  local mark, kept = string.sub(entry, 1, 1), digest_of(entry)
  if e[6] * 1000 <= erased_at[state] then
    outcome = 'erased'
  elseif kept and e[18] ~= '' and kept ~= unhex(e[18]) then
    outcome = 'rejected'  -- another statement under a held id: nothing of it is applied
    refused[#refused + 1] = i
    refused[#refused + 1] = string.format(CONFLICT, e[13])
  elseif mark == 'v' then
    outcome = 'voided'
  elseif mark == 'a' or mark == 'c' then
    outcome = 'duplicate'  -- applied already, in another bucket
  elseif redis.call('SADD', seen, e[4]) == 1 then
    expiring[seen] = e[5]
    if xkey then voidable[xkey] = true end
    if e[17] ~= '' then
      outcome = void(xkey, e, state, days)
    elseif full(state, days, e[14], comp_index[e[7]]) then
      redis.call('SREM', seen, e[4])  -- not applied: a later delivery is checked afresh
      outcome = 'rejected'
      refused[#refused + 1] = i
      refused[#refused + 1] = string.format(DAY_FULL, DAY_MAX, e[7])
    else
      outcome = 'applied'
      gather(state, days, student, e[7], e[8], e[9], e[10], e[11], e[14], e[15], 1, e[6], e[13])
      if xkey then
        local added = struct.pack('<BHI4dd', comp_index[e[7]], e[14], e[15], e[9], e[10])
        local tag = e[18] ~= '' and 'c' or 'a'
        redis.call('HSET', xkey, e[4], tag .. added .. unhex(e[18]) .. e[8])
      end
    end
  end
  if outcome == 'rejected' then
    local m = e[19]
    if m > 0 and (stops[m] == nil or e[20] < stops[m]) then stops[m] = e[20] end
    audit_id = redis.call('XADD', TK.audit, 'MAXLEN', '~', maxlen, '*', 'outcome', outcome,
      'reason', refused[#refused], 'event', ARGV[AUDIT + i])
  else
    local record = outcome == 'erased' and forgotten(ARGV[AUDIT + i]) or ARGV[AUDIT + i]
    audit_id = redis.call('XADD', TK.audit, 'MAXLEN', '~', maxlen, '*', 'outcome', outcome,
      'event', record)
  end
  outcomes[#outcomes + 1] = outcome
end

-- The xapi hashes keep their entries the window long: each is pruned at most once a
-- week (field '_p': the day it last was) of the entries whose day has left the window.
local today = math.floor((tonumber(now_ms) / 1000 - origin) / 86400)
for xkey in pairs(voidable) do
  if tonumber(redis.call('HGET', xkey, '_p') or '-1') <= today - 7 then
    local all, old = redis.call('HGETALL', xkey), {}
    for i = 1, #all, 2 do
      local v, day = all[i + 1], nil
      if all[i] ~= '_p' then
        if string.sub(v, 1, 1) == 'v' then day = struct.unpack('<H', v, 2)
        else day = select(2, struct.unpack('<BH', v, 2)) end
        if day <= today - window then old[#old + 1] = all[i] end
      end
    end
    in_chunks('HDEL', xkey, old)
    redis.call('HSET', xkey, '_p', today)
  end
  redis.call('EXPIRE', xkey, ttl)
end
for seen, at in pairs(expiring) do redis.call('EXPIREAT', seen, string.format('%d', at)) end
-- Audit records live as long as the data they describe: trimmed by age, then by TTL.
if #events > 0 then
  redis.call('XTRIM', TK.audit, 'MINID', '~', string.format('%d', tonumber(now_ms) - ttl * 1000))
  redis.call('EXPIRE', TK.audit, ttl)
end

-- Per student: one HMGET of what the batch touches, the new values computed here, one HSET.
local function num(v) return tonumber(v or '0') end
local function fmt(x) return string.format('%.17g', x) end
local sum_field, weight_field = {}, {}  -- '<component>:s' / ':w', built once
for j, c in ipairs(comps) do sum_field[j], weight_field[j] = c .. ':s', c .. ':w' end

-- Component scores as units (0..10000, 65535 = unobserved) from the state's sums.
local function component_units(val)
  local v = {}
  for j = 1, #comps do
    local s, w = num(val[sum_field[j]]), num(val[weight_field[j]])
    v[j] = 65535
    if w > 0 then v[j] = math.max(0, math.min(10000, math.floor(10000 * s / w + 0.5))) end
  end
  return v
end

-- The index units from the component units, in METRICS order: mastery, then each
-- component (unobserved = 0), as mastery.domain.cohort.index_units computes them.
local function index_units(v)
  local out, m = {0}, 0
  for j = 1, #comps do
    local u = v[j] == 65535 and 0 or v[j]
    out[j + 1] = u
    m = m + weights[j] * u
  end
  out[1] = math.floor(m + 0.5)
  return out
end

-- Mastery and level exactly as mastery.domain.explain shows them: the clamped means
-- weighted in Component order, rounded to 9 then 4 decimals (a test holds the two equal).
local function mastery_of(val)
  local m = 0
  for j = 1, #comps do
    local s, w = num(val[sum_field[j]]), num(val[weight_field[j]])
    m = m + weights[j] * (w > 0 and math.min(1, math.max(0, s / w)) or 0)
  end
  return m
end

local function shown(m)
  return tonumber(string.format('%.4f', tonumber(string.format('%.9f', m))))
end

local function level_of(m)
  for _, lf in ipairs(levels) do  -- rounding only matters next to a floor (it is slow)
    if math.abs(m - lf[2]) < 1e-4 then m = shown(m); break end
  end
  for _, lf in ipairs(levels) do
    if m >= lf[2] then return lf[1] end
  end
  return levels[#levels][1]
end

-- A student's classes, as the state's 'classes' field keeps them: '<class>:<day>,...',
-- the last day an event of theirs carried each (mastery.store.records.class_days); an
-- entry without a day (written before days were kept) counts as of their last event.
local function class_days(field, last_at)
  local default, out = math.floor((num(last_at) - origin) / 86400), {}
  for entry in string.gmatch(field, '[^,]+') do
    local at = string.find(entry, ':', 1, true)
    if at then out[string.sub(entry, 1, at - 1)] = tonumber(string.sub(entry, at + 1))
    else out[entry] = default end
  end
  return out
end

-- The classes a student keeps with a call's additions: those carried within 'lapse' days
-- of the newest day any of theirs was (mastery.domain.scoring.current_classes). Returns
-- the field to store, the class names, those the student left, and whether the names
-- changed. ``old`` (parsed from ``field``) is this call's own: it is updated in place.
local function current_classes(field, old, added)
  local newer = false
  for c, d in pairs(added) do
    if (old[c] or -1) < d then newer = true; break end
  end
  if not newer then  -- the usual case past a day's first event: nothing changes
    local names = {}
    for c in pairs(old) do names[#names + 1] = c end
    return field, names, {}, false
  end
  local all, newest, joined = old, -1, false
  for c, d in pairs(added) do
    if not all[c] then joined = true end
    if (all[c] or -1) < d then all[c] = d end
  end
  for _, d in pairs(all) do
    if d > newest then newest = d end
  end
  local names, left = {}, {}
  for c, d in pairs(all) do
    if d > newest - lapse then names[#names + 1] = c
    else left[#left + 1] = c end  -- (one only just added, in no index: HDEL does nothing)
  end
  if #names > 1 then table.sort(names) end
  local entries = {}
  for i, c in ipairs(names) do entries[i] = c .. ':' .. all[c] end  -- integers print whole
  return table.concat(entries, ','), names, left, joined or #left > 0
end

local deltas, pending, changes, active, joined = {}, pending_sets(), {}, {}, {}
for _, state in ipairs(order) do
  local st = students[state]
  local fields = {'last_at', 'classes', 'version'}
  for j = 1, #comps do
    fields[#fields + 1] = sum_field[j]
    fields[#fields + 1] = weight_field[j]
  end
  for p in pairs(st.sums) do
    if string.sub(p, 1, 2) == 'a:' then  -- component sums are in the list already
      fields[#fields + 1] = p .. ':s'
      fields[#fields + 1] = p .. ':w'
    end
    fields[#fields + 1] = p .. ':n'
  end
  local cur = in_chunks('HMGET', state, fields)  -- a student with thousands of areas
  local val = {}
  for k, f in ipairs(fields) do val[f] = cur[k] end

  local old_units = val['version'] and index_units(component_units(val)) or nil
  local old_mastery = val['version'] and mastery_of(val) or nil
  local old_days = class_days(val['classes'] or '', val['last_at'])
  local last = math.max(num(val['last_at']), st.last)
  local class_field, classes, left, changed = current_classes(val['classes'] or '', old_days,
    st.classes)
  local out = {'last_at', string.format('%.6f', last), 'classes', class_field,
    'updated_at', now_ms,
    'version', string.format('%d', num(val['version']) + st.n)}
  -- A new state (a student's first events, or their first since an erasure or expiry)
  -- is stamped 'born' with this call's newest audit id: the version restarts at 1, but
  -- the tenant's stream ids only grow (whatever the clock does; the stream outlives its
  -- states), so no two of a student's states share version and 'born'. An answer cache
  -- entry is kept and served for both (cache.lua).
  if not val['version'] then
    out[#out + 1] = 'born'
    out[#out + 1] = audit_id
  end
  local gone = {}  -- sums whose every event was voided: as if never observed
  for p, sum in pairs(st.sums) do
    local n_ = num(val[p .. ':n']) + sum[3]
    if n_ <= 0 then
      val[p .. ':s'], val[p .. ':w'] = nil, nil
      gone[#gone + 1] = p .. ':s'; gone[#gone + 1] = p .. ':w'; gone[#gone + 1] = p .. ':n'
    else
      local s_, w_ = num(val[p .. ':s']) + sum[1], num(val[p .. ':w']) + sum[2]
      val[p .. ':s'], val[p .. ':w'] = s_, w_
      out[#out + 1] = p .. ':s'; out[#out + 1] = fmt(s_)
      out[#out + 1] = p .. ':w'; out[#out + 1] = fmt(w_)
      out[#out + 1] = p .. ':n'; out[#out + 1] = string.format('%d', n_)
    end
  end
  in_chunks('HSET', state, out)
  in_chunks('HDEL', state, gone)
  redis.call('EXPIRE', state, ttl)

  -- A level change (not a student's first placement) goes to the outbox in this same
  -- atomic step, so a redelivered batch records it no second time (published at least
  -- once: docs/api.md "Level changes").
  if old_mastery then
    local new_mastery = mastery_of(val)
    local old_level, new_level = level_of(old_mastery), level_of(new_mastery)
    if old_level ~= new_level then
      local note = cjson.encode({tenant = tenant, student_id = st.student,
        old_level = old_level, new_level = new_level, mastery = shown(new_mastery),
        previous_mastery = shown(old_mastery), cause_event_id = st.cause,
        version = num(val['version']) + st.n, changed_at = tonumber(now_ms)})
      changes[#changes + 1] = {redis.call('XADD', TK.outbox, '*', 'note', note), note}
      redis.call('EXPIRE', TK.outbox, ttl)
    end
  end

  -- The day records get this batch's events, each in its own day (whatever the order
  -- they came in: integer sums commute); see update_days.
  local records = update_days(stored_days(st.days), st.day_adds)
  stored[st.days] = nil  -- done with: let the collector have it
  if records == '' then redis.call('DEL', st.days)
  else redis.call('SET', st.days, records, 'EX', ttl) end

  local v = component_units(val)
  -- Cohort indexes: the student's units in the tenant and in each of their classes.
  local new_units = index_units(v)
  tenant_set(st.student, old_units, new_units, deltas, pending)
  for _, class in ipairs(classes) do
    class_set(prefix, class, st.student, new_units, pending)
  end
  for _, class in ipairs(left) do redis.call('HDEL', class_key(prefix, class), st.student) end
  if changed then
    joined[#joined + 1] = st.student
    joined[#joined + 1] = table.concat(classes, ',')
  end
  active[#active + 1] = math.floor(now_ms / 1000)
  active[#active + 1] = st.student
end

-- The cohort indexes, the students' classes and the active set, one command per key
-- (before the prune, which must see this call's students as active).
flush_sets(pending, ttl)
in_chunks('HSET', TK.classes, joined)
in_chunks('ZADD', TK.active, active)

-- Students whose data expired leave the indexes; tenant-wide keys live while it is active.
if #events > 0 then
  prune(prefix, math.floor(now_ms / 1000) - ttl, deltas)
  redis.call('EXPIRE', TK.active, ttl)
  redis.call('EXPIRE', TK.classes, ttl)
end
flush_sums(deltas, ttl)
if #order > 0 then  -- the tenant's five sorted sets and their sums
  for i = 1, #METRICS do redis.call('EXPIRE', TK.index[i], ttl) end
  redis.call('EXPIRE', TK.sum, ttl)
end
-- Whether the outbox holds a note older than 'leftover' ms, by Redis's own clock (the
-- entry ids' clock): left by a publish that was cut off.
local function backlog()
  local oldest = redis.call('XRANGE', TK.outbox, '-', '+', 'COUNT', 1)[1]
  if not oldest then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return tonumber(string.match(oldest[1], '^%d+')) < now - leftover and 1 or 0
end

local written = {}
for j, m in ipairs(marks) do
  if stops[j] and stops[j] < tonumber(m[3]) then m[3] = string.format('%d', stops[j]) end
  written[#written + 1] = m[1]
  written[#written + 1] = m[3]
end
offsets_set(OFFSETS, marks, ttl)
return {outcomes, changes, backlog(), refused, written}

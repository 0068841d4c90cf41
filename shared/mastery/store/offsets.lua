-- A tenant's applied Kafka offsets, shared by apply.lua and advance.lua (prepended).
--
-- The hash holds, per "<topic>:<partition>", the next offset of that partition from
-- which this tenant's events may not all be applied. It is written by the same call that
-- applies them, so after a failover that lost writes it is exactly as old as the data.
-- marks: {field, expected, new} each, offsets as decimal strings ('' = no entry). A
-- writer names what it last saw; a different stored value means the offsets moved under
-- it (lost writes, or another consumer) and nothing is written: it must re-read them.
-- A stored value equal to the new one is this very batch's, applied by an attempt whose
-- reply never came (or whose dead letters the broker did not take): the retry goes on,
-- its events now duplicates, and what the store refuses is refused, and dead-lettered,
-- again (otherwise the retry would seek past the batch and those dead letters be lost).

local function offsets_moved(key, marks)
  for _, m in ipairs(marks) do
    local stored = redis.call('HGET', key, m[1]) or ''
    if stored ~= m[2] and stored ~= m[3] then return {'moved', m[1], stored} end
  end
  return nil
end

local function offsets_set(key, marks, ttl)
  if #marks == 0 then return end
  local flat = {}
  for _, m in ipairs(marks) do
    flat[#flat + 1] = m[1]
    flat[#flat + 1] = m[3]
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('EXPIRE', key, ttl)
end

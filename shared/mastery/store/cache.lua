-- Store answer-cache entries (a prediction, a history), each only while its student's
-- state is still at the version the answer was made from: an erasure (or newer events)
-- between the read and this write leaves nothing behind, where a plain SET put the
-- erased student's answer back for the cache's hour.
--
-- KEYS: per entry, its key, then the student's state key (one tenant: one hash slot)
-- ARGV: ttl_s, then per entry, the entry and the state version it was made from
local ttl = ARGV[1]
for i = 1, #KEYS, 2 do
  if redis.call('HGET', KEYS[i + 1], 'version') == ARGV[i + 2] then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  end
end

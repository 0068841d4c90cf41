-- Store answer-cache entries (a prediction, a history), each only while its student's
-- state is still the one the answer was made from: an erasure (or newer events) between
-- the read and this write leaves nothing behind, where a plain SET put the erased
-- student's answer back for the cache's hour. The state is named by its version and its
-- 'born' stamp (apply.lua), '<version>@<born>' (mastery.store.StudentDays.stamp): the
-- version alone restarts at 1 after an erasure, so new events bringing the fresh record
-- back to the version read let the erased student's answer in (found by a security
-- reviewer). A state written before 'born' was kept is '<version>@'.
--
-- KEYS: per entry, its key, then the student's state key (one tenant: one hash slot)
-- ARGV: ttl_s, then per entry, the entry and the stamp of the state it was made from
local ttl = ARGV[1]
for i = 1, #KEYS, 2 do
  local held = redis.call('HMGET', KEYS[i + 1], 'version', 'born')
  if held[1] and held[1] .. '@' .. (held[2] or '') == ARGV[i + 2] then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  end
end

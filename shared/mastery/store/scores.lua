-- The scoring fields (ARGV, in order) of every student state in KEYS, one row each.
-- One command for a whole batch: redis-py packs its arguments once, not per student.
local rows = {}
for i, key in ipairs(KEYS) do
  rows[i] = redis.call('HMGET', key, unpack(ARGV))
end
return rows

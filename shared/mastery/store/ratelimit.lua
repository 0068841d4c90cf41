-- GCRA (generic cell rate algorithm): `limit` requests per `period`, bursts up to `limit`.
-- KEYS[1]: the caller's key, holding its theoretical arrival time (TAT, ms); KEYS[2]
--   (optional): a hash the request will read, read here when it is allowed (same slot:
--   both keys carry the tenant's hash tag), saving the request a round trip.
-- ARGV: limit, period_ms.
-- Returns {allowed (0/1), remaining, retry_after_ms, reset_ms[, HGETALL of KEYS[2]]}.
-- Redis's own clock, so every instance of every function agrees on "now".
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = period / limit
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local new_tat = tat + interval
if new_tat - now > period then
  return {0, 0, math.ceil(new_tat - period - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(new_tat - now))
local reply = {1, math.floor((period - (new_tat - now)) / interval), 0, math.ceil(new_tat - now)}
if KEYS[2] then reply[5] = redis.call('HGETALL', KEYS[2]) end
return reply

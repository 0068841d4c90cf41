-- Move a tenant's applied offsets forward over events that held none of its own.
-- (offsets.lua is prepended.)
-- KEYS[1]: the tenant's offsets hash. ARGV: ttl_s, the marks as JSON.
-- Returns {'ok'}, or {'moved', field, stored} and writes nothing.
local marks = cjson.decode(ARGV[2])
local moved = offsets_moved(KEYS[1], marks)
if moved then return moved end
offsets_set(KEYS[1], marks, tonumber(ARGV[1]))
return {'ok'}

-- wrk script: POST binary-mode CloudEvents round-robin, each with an id of its own.
-- Usage: wrk ... -s bench/events.lua <url> -- <events file> <run name>
-- Each line of the file: the body in hex, then its HTTP headers ("name: value"), all
-- tab-separated, without ce-id: each request gets "<run name>-<thread>-<n>", so no id
-- repeats within a run or across runs with different names (no duplicates measured).

local threads = 0
local events = {}
local next_index = 0
local sent = 0
local prefix

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

local function unhex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

function init(args)
  prefix = args[2] .. "-" .. thread_number .. "-"
  for line in io.lines(args[1]) do
    local fields = {}
    for field in line:gmatch("[^\t]+") do
      fields[#fields + 1] = field
    end
    local headers = {}
    for i = 2, #fields do
      local name, value = fields[i]:match("^([^:]+): (.*)$")
      headers[name] = value
    end
    events[#events + 1] = { headers = headers, body = unhex(fields[1]) }
  end
  -- Threads start at different points of the list.
  next_index = math.random(#events) - 1
end

function request()
  next_index = next_index % #events + 1
  sent = sent + 1
  local event = events[next_index]
  event.headers["ce-id"] = prefix .. sent
  return wrk.format("POST", wrk.path, event.headers, event.body)
end

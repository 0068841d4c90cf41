-- wrk script: POST pre-built requests round-robin.
-- Usage: wrk ... -s bench/query.lua <url> -- <requests file>
-- Each line of the file is "<bearer token>\t<JSON body>".

local requests = {}
local next_index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local token, body = line:match("^([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", wrk.path, {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
    }, body)
  end
  file:close()
  -- Threads start at different points of the list.
  next_index = math.random(#requests) - 1
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

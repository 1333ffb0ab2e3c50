-- POST the same body to N streams in turn (each connection's next request goes to the next
-- stream), so that appends spread over many streams, as many writers' would.
-- args: path prefix (streams PREFIX0 .. PREFIX<N-1>), N, body size in bytes
COUNTERS = {}
local paths, body, turn = {}, "", 0

function init(args)
  for n = 1, tonumber(args[2]) do
    paths[n] = args[1] .. (n - 1)
  end
  body = string.rep("x", tonumber(args[3]))
  wrk.headers["Content-Type"] = "application/octet-stream"
end

function request()
  turn = turn % #paths + 1
  return wrk.format("POST", paths[turn], nil, body)
end

-- POST the same body over and over (the request is built once, so wrk stays static).
-- args: content-type, "bytes" SIZE | "json" MESSAGES | "state" MESSAGES (State Protocol
-- upserts of keys k1..kN; benchmarks/state.py's wrk_changes is the state they leave)
COUNTERS = {}

function init(args)
  local body
  if args[2] == "json" then
    local items = {}
    for i = 1, tonumber(args[3]) do
      items[i] = string.format('{"i":%d,"pad":"%s"}', i, string.rep("x", 80))
    end
    body = "[" .. table.concat(items, ",") .. "]"
  elseif args[2] == "state" then
    local items = {}
    local change = '{"type":"todo","key":"k%d","value":{"text":"todo %d","done":false,"rev":%d},"headers":{"operation":"upsert"}}'
    for i = 1, tonumber(args[3]) do
      items[i] = string.format(change, i, i, i)
    end
    body = "[" .. table.concat(items, ",") .. "]"
  else
    body = string.rep("x", tonumber(args[3]))
  end
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = args[1]
end

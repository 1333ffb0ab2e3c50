-- Read a whole stream from the start, following Stream-Next-Offset until Stream-Up-To-Date,
-- then start again. One connection per thread (run with -t N -c N).
-- args: stream path (no query). Counters: full reads, non-200 answers.
COUNTERS = {"full_reads", "bad"}
full_reads = 0
bad = 0
local path
local offset = "-1"

function init(args)
  path = args[1]
end

function request()
  return wrk.format("GET", path .. "?offset=" .. offset)
end

local function header(headers, name)
  for key, value in pairs(headers) do
    if string.lower(key) == name then
      return value
    end
  end
  return nil
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    offset = "-1"
    return
  end
  if header(headers, "stream-up-to-date") == "true" then
    full_reads = full_reads + 1
    offset = "-1"
  else
    offset = header(headers, "stream-next-offset") or "-1"
  end
end

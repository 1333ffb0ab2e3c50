-- PUT new streams with unique names until LIMIT were created (201) by this thread, then stop
-- and print "WRKSTOP" so the harness ends wrk at once. Run with -t 1.
-- args: name prefix (a path), LIMIT, initial body size in bytes (0: empty stream).
-- Counters: created, bad (non-201 answers), bad_status (the last of them),
-- elapsed_us (first requests to the LIMIT-th 201).
-- Names are PREFIX t<thread>-<n>; wrk calls request() once more to check the script, so the
-- numbers do not start at 1: the harness creates its own probe stream to look for.
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local timespec = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

COUNTERS = {"created", "bad", "bad_status", "elapsed_us"}
created = 0
bad = 0
bad_status = 0 -- the last non-201 status seen
elapsed_us = 0
local prefix
local limit
local body
local sent = 0
local started
local finished = false

function init(args)
  prefix = args[1] .. "t" .. tostring(thread_index or 0) .. "-"
  limit = tonumber(args[2])
  local size = tonumber(args[3])
  if size > 0 then
    body = string.rep("x", size)
  end
end

function request()
  if created + bad == 0 then
    started = now_us() -- the last request sent before the first answer
  end
  sent = sent + 1
  local headers = { ["Content-Type"] = "application/octet-stream" }
  return wrk.format("PUT", prefix .. tostring(sent), headers, body)
end

function response(status, headers, response_body)
  if finished then
    return
  end
  if status == 201 then
    created = created + 1
  else
    bad = bad + 1
    bad_status = status
  end
  elapsed_us = math.floor(now_us() - started)
  if created >= limit then
    finished = true
    io.write("WRKSTOP\n")
    io.flush()
    wrk.thread:stop()
  end
end

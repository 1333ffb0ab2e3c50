-- Appended to every scenario script by benchmarks/loadgen.py: collects the threads and, at the
-- end, prints one line "WRKJSON {...}" with wrk's summary and the scenario's own counters
-- (globals named in COUNTERS, summed over threads).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

function done(summary, latency, requests)
  local counters = {}
  for _, name in ipairs(COUNTERS or {}) do
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + (tonumber(thread:get(name)) or 0)
    end
    table.insert(counters, string.format('"%s":%d', name, total))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"counters":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(counters, ",")))
end

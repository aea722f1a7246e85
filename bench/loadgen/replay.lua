-- wrk script: replay pre-signed raw HTTP requests, then report as one JSON line.
--
-- Usage: wrk ... -s replay.lua URL -- REQUEST_FILE [START_OFFSET]
--
-- REQUEST_FILE holds records "<byte length>\n<raw HTTP/1.1 request>" written by
-- bench/api_throughput.py. Every connection of a thread takes the next record in turn, so
-- distinct bodies (RegisterTaskDefinition) are sent once each until the pool wraps around.
-- Threads start at evenly spaced offsets; START_OFFSET shifts them all (used after a warm-up
-- run so the timed run sends requests the warm-up did not).

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local requests = {}
local n = 0
local idx = 0

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  local threads = tonumber(args[3] or "1")
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  local size = #data
  while pos <= size do
    local nl = string.find(data, "\n", pos, true)
    local len = tonumber(string.sub(data, pos, nl - 1))
    n = n + 1
    requests[n] = string.sub(data, nl + 1, nl + len)
    pos = nl + 1 + len
  end
  assert(n > 0, "no requests in " .. path)
  idx = (offset + math.floor(thread_index * n / threads)) % n
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
  end
  return requests[idx]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end

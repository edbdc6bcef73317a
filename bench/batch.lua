-- wrk script: POST /v1/batch with BENCH_BATCH identify messages (default 100), each a new email and
-- its own message_id. Environment: BENCH_API_KEY, BENCH_RUN_ID, BENCH_BATCH.
-- done() prints the same BENCH_JSON line as identify.lua, which bench/run.py parses.
local key = os.getenv("BENCH_API_KEY") or "missing"
local run_id = os.getenv("BENCH_RUN_ID") or "0"
local size = tonumber(os.getenv("BENCH_BATCH") or "100")
local counter = 0
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  prefix = string.format("b%s-%d-", run_id, thread_id)
end

function request()
  local messages = {}
  for i = 1, size do
    counter = counter + 1
    local id = prefix .. counter
    messages[i] = '{"type":"identify","email":"' .. id .. '@example.com","message_id":"' .. id
      .. '","name":"Bench User","status":"trial","params":{"plan":"pro","seats":' .. (counter % 50) .. '}}'
  end
  return wrk.format(nil, nil, nil, '{"batch":[' .. table.concat(messages, ",") .. ']}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

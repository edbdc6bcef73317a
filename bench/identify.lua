-- wrk script: POST /v1/identify, a different email on every request, with an API key.
-- Environment: BENCH_API_KEY (the bearer token), BENCH_RUN_ID (makes emails unique across points),
-- BENCH_API_KEYS (optional, comma separated: the requests take these keys in turn instead).
-- done() prints one machine-readable line, BENCH_JSON {...}, that bench/run.py parses.
local key = os.getenv("BENCH_API_KEY") or "missing"
local keys = {}
for k in string.gmatch(os.getenv("BENCH_API_KEYS") or key, "[^,]+") do
  keys[#keys + 1] = "Bearer " .. k
end
local run_id = os.getenv("BENCH_RUN_ID") or "0"
local counter = 0
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  prefix = string.format("u%s-%d-", run_id, thread_id)
end

function request()
  counter = counter + 1
  local body = '{"email":"' .. prefix .. counter .. '@example.com","name":"Bench User","status":"trial",'
    .. '"params":{"plan":"pro","seats":' .. (counter % 50) .. '}}'
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = keys[counter % #keys + 1]}
  return wrk.format(nil, nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

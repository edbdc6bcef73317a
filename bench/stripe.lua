-- wrk script: POST /webhooks/<stripe source>, each request a different pre-signed Stripe event.
-- wrk's Lua cannot compute HMAC-SHA256, so bench/run.py signs the deliveries (with the current time,
-- well inside Stripe's 300 s tolerance) into BENCH_STRIPE_FILE, one "<Stripe-Signature>\t<body>" per
-- line; thread k sends lines k, k+T, k+2T... so no two requests carry the same event id. The warmup
-- run (BENCH_RUN_ID "w…") uses the first half of the file, the measured run ("m…") the second half,
-- so the measured requests are all new events, never redeliveries.
-- done() prints the BENCH_JSON line bench/run.py parses (as identify.lua does).
local path = os.getenv("BENCH_STRIPE_FILE") or "missing"
local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
local measured = (os.getenv("BENCH_RUN_ID") or "m"):sub(1, 1) == "m"
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  deliveries = {}
  for line in io.lines(path) do
    local tab = line:find("\t", 1, true)
    deliveries[#deliveries + 1] = {line:sub(1, tab - 1), line:sub(tab + 1)}
  end
  position = thread_id
  if measured then
    position = thread_id + threads * math.floor(#deliveries / (2 * threads))
  end
end

function request()
  local delivery = deliveries[(position % #deliveries) + 1]
  position = position + threads
  wrk.headers["Stripe-Signature"] = delivery[1]
  return wrk.format(nil, nil, nil, delivery[2])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

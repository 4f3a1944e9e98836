-- wrk script for Hive: submits tasks, creates tasks or asks the queen something, and ends with one
-- machine-readable line that hive-bench parses (wrk's own summary above it is for people).
--
--   wrk -t2 -c32 -d6s -s scripts/wrk/hive.lua http://127.0.0.1:8080/submit_task -- submit
--   wrk -t2 -c32 -d6s -s scripts/wrk/hive.lua http://127.0.0.1:8080/tasks -- task
--   wrk -t2 -c32 -d6s -s scripts/wrk/hive.lua http://127.0.0.1:8080/healthz
--   wrk -t2 -c8 -d6s -s scripts/wrk/hive.lua 'http://127.0.0.1:8080/tasks?state=pending'
--
-- With the argument `submit` every request is POST {"text": "hello"} as JSON (the tutorial's
-- task); with `task`, POST {"command": ["true"]} as JSON (a new task that runs `true`, for
-- POST /tasks); with none, a GET of the URL. HIVE_TOKEN, when set, is sent as
-- `Authorization: Bearer <token>`, as the scripts do.
--
-- The last line printed is
--   HIVE-WRK {"requests":N,"duration_us":N,"errors":{"connect":N,"read":N,"write":N,"status":N,
--             "timeout":N},"latency_us":{"p50":N,"p90":N,"p99":N,"p99.9":N,"max":N}}
-- where errors.status counts answers that are not 2xx or 3xx, errors.timeout requests that took
-- longer than wrk's --timeout (2 s by default; they are left out of the latencies), and every
-- latency is in microseconds.

-- The bodies: the tutorial's task for POST /submit_task, a command for POST /tasks.
local SUBMIT_BODY = '{"text": "hello"}'
local TASK_BODY = '{"command": ["true"]}'

-- The percentiles reported, as wrk names them, and the keys they get in the line.
local PERCENTILES = { { 50, "p50" }, { 90, "p90" }, { 99, "p99" }, { 99.9, "p99.9" } }

-- Runs once in each of wrk's threads, before its first request. wrk builds every request from the
-- fields set here, once, so the script costs nothing per request.
function init(args)
   local bodies = { submit = SUBMIT_BODY, task = TASK_BODY }
   if args[1] ~= nil then
      local body = bodies[args[1]]
      if body == nil then
         error("hive.lua: unknown argument " .. args[1] .. " (use submit, task, or nothing for a GET)")
      end
      wrk.method = "POST"
      wrk.body = body
      wrk.headers["Content-Type"] = "application/json"
   end
   local token = os.getenv("HIVE_TOKEN")
   if token ~= nil and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local parts = {}
   for _, p in ipairs(PERCENTILES) do
      parts[#parts + 1] = string.format('"%s":%d', p[2], latency:percentile(p[1]))
   end
   parts[#parts + 1] = string.format('"max":%d', latency.max)
   io.write(string.format(
      'HIVE-WRK {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,'
         .. '"status":%d,"timeout":%d},"latency_us":{%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ",")))
end

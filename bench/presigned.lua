-- wrk script of bench/api.py: serves PRE-SIGNED requests from a file, each at most once.
--
--   wrk ... -s bench/presigned.lua http://127.0.0.1:PORT/ -- FILE NTHREADS MODE
--
-- FILE holds complete raw HTTP/1.1 requests separated by NUL bytes. Thread k of
-- NTHREADS sends requests k, k+NTHREADS, ... in order. The server rejects a replayed
-- SignatureNonce, so with MODE "once" a thread that runs out of requests sends its
-- last one again (the server answers 400, counted as non-2xx) and counts that as
-- "exhausted"; MODE "cycle" (the hello-world baseline) starts over instead.
-- Every response is checked: status 2xx, and unless MODE is "cycle" a body with
-- "Success":true (business errors are HTTP 200 with "Success":false).
-- done() prints one line "BENCHJSON {...}" that bench/api.py parses.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads, mode = args[1], tonumber(args[2]), args[3]
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local i, pos = 0, 1
  while true do
    local s = string.find(data, "\0", pos, true)
    if not s then break end
    if i % nthreads == tid then reqs[#reqs + 1] = string.sub(data, pos, s - 1) end
    i = i + 1
    pos = s + 1
  end
  data = nil
  total = #reqs
  cycle = (mode == "cycle")
  idx = 0
  sent = 0
  exhausted = 0
  non2xx = 0
  not_success = 0
end

function request()
  sent = sent + 1
  idx = idx + 1
  if idx > total then
    if cycle then
      idx = 1
    else
      exhausted = exhausted + 1
      idx = total
    end
  end
  return reqs[idx]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not cycle and not string.find(body, '"Success":true', 1, true) then
    not_success = not_success + 1
  end
end

function done(summary, latency, requests)
  local ex, s, n2, ns, gen = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ex = ex + t:get("exhausted")
    s = s + t:get("sent")
    n2 = n2 + t:get("non2xx")
    ns = ns + t:get("not_success")
    gen = gen + t:get("total")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"stdev_us":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"sent":%d,"generated":%d,"exhausted":%d,"non_2xx":%d,"not_success":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
    s, gen, ex, n2, ns))
end

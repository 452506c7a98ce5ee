-- wrk script: POST /v1/events with N events per request, each with a fresh UUID v4 and a real feedback token.
-- Usage: wrk -s bench/events.lua URL -- TOKENS_FILE EVENTS_PER_REQUEST EXPECT
--   TOKENS_FILE: first line the project's public key, then one "trace_id session_id token" per line.
--   EXPECT: "accepted" (gateway: answer 200, every event accepted) or "204" (the bare app).
-- done() prints one JSON line prefixed "BENCH " that bench/run.py parses.

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

local TYPES = {
   '"type":"shown"',
   '"type":"copied","length":%d',
   '"type":"feedback","value":%d,"reason":"too_long"',
   '"type":"edited","edit_ratio":0.%d',
   '"type":"regenerated","attempt":%d',
   '"type":"rephrased","similarity":0.%d',
   '"type":"abandoned"',
}

-- Every event type with its fields: feedback with value 0 and 1, the others with their number 2..8. 7 * 7 entries,
-- so consecutive events cycle through the types and, more slowly, the values.
local FIELDS = {}
for variant = 0, 6 do
   for index, kind in ipairs(TYPES) do
      FIELDS[#FIELDS + 1] = kind:format(index == 3 and variant % 2 or variant + 2)
   end
end

local public_key, traces, per_request, expect
-- Globals, not locals: done() reads each thread's counters with thread:get().
ok_requests, bad_requests, accepted, not_accepted = 0, 0, 0, 0
local sequence = 0  -- this thread's requests
local serial = 0  -- this thread's events
local node  -- random per thread: with `serial`, what keeps ids unique

function init(args)
   local file = assert(io.open(args[1], "r"))
   public_key = file:read("*l")
   traces = {}
   for line in file:lines() do
      local trace, session, token = line:match("^(%S+) (%S+) (%S+)$")
      -- What an event repeats of its trace, built once.
      if trace then table.insert(traces, ',"trace_id":"' .. trace .. '","token":"' .. token .. '","ts":') end
   end
   file:close()
   per_request = tonumber(args[2])
   expect = args[3]
   -- Seed per thread: wrk's threads start within the same second, so mix in the thread id and a clock.
   math.randomseed(os.time() * 1000 + (id or 0) * 7919 + math.floor(os.clock() * 1e6))
   node = string.format("%x%03x-%05x", math.random(8, 11), math.random(0, 4095), math.random(0, 1048575))
end

-- A UUIDv7 like the widget's: a millisecond clock first (wrk's Lua has only whole seconds, so the milliseconds are
-- this thread's request counter), so the gateway's unique index sees time-ordered ids. The rest is 12 random bits
-- and, where the widget has more random bits, this thread's random node and event counter (RFC 9562's counter
-- method): as unique, and one string.format per event instead of twenty random draws. The load generator shares the
-- server's two cores, so what it spends per event the server loses.
local EVENT = '{"id":"%08x-%04x-7%03x-%s%07x",%s%s%d000,"dwell_ms":%d}'

local function event(trace, n, ms, now)
   local fields = FIELDS[n % #FIELDS + 1]
   serial = serial + 1
   return EVENT:format(math.floor(ms / 65536), ms % 65536, math.random(0, 4095), node, serial % 268435456, fields,
      trace, now, 100 + n % 5000)
end

function request()
   sequence = sequence + 1
   local trace = traces[math.random(#traces)]
   local now = os.time()
   local ms = now * 1000 + sequence % 1000
   local events = {}
   for i = 1, per_request do
      events[i] = event(trace, sequence + i, ms, now)
   end
   local body = '{"project":"' .. public_key .. '","events":[' .. table.concat(events, ",") .. ']}'
   return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["Origin"] = "http://bench.local",
   }, body)
end

function response(status, headers, body)
   if expect == "204" then
      if status == 204 then ok_requests = ok_requests + 1 else bad_requests = bad_requests + 1 end
      return
   end
   local n, at = 0, 1
   while status == 200 do  -- a plain find: a Lua pattern (gsub) took ~20 us on a 20-event answer
      at = body:find('"status":"accepted"', at, true)
      if not at then break end
      n, at = n + 1, at + 19
   end
   if n == per_request then ok_requests = ok_requests + 1 else bad_requests = bad_requests + 1 end
   accepted = accepted + n
   not_accepted = not_accepted + (per_request - n)
end

function done(summary, latency, requests)
   local ok, bad, acc, nacc = 0, 0, 0, 0
   for _, thread in ipairs(threads) do
      ok = ok + thread:get("ok_requests")
      bad = bad + thread:get("bad_requests")
      acc = acc + thread:get("accepted")
      nacc = nacc + thread:get("not_accepted")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"duration_us":%d,"requests":%d,"ok_requests":%d,"bad_requests":%d,"accepted":%d,"not_accepted":%d,'
      .. '"socket_errors":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.duration, summary.requests, ok, bad, acc, nacc, e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

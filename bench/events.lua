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

local public_key, traces, per_request, expect
-- Globals, not locals: done() reads each thread's counters with thread:get().
ok_requests, bad_requests, accepted, not_accepted = 0, 0, 0, 0
local sequence = 0
local hex = "0123456789abcdef"

function init(args)
   local file = assert(io.open(args[1], "r"))
   public_key = file:read("*l")
   traces = {}
   for line in file:lines() do
      local trace, session, token = line:match("^(%S+) (%S+) (%S+)$")
      if trace then table.insert(traces, {trace, token}) end
   end
   file:close()
   per_request = tonumber(args[2])
   expect = args[3]
   -- Seed per thread: wrk's threads start within the same second, so mix in the thread id and a clock.
   math.randomseed(os.time() * 1000 + (id or 0) * 7919 + math.floor(os.clock() * 1e6))
end

-- UUIDv7 like the widget's: a millisecond clock first (wrk's Lua has only whole seconds, so the milliseconds are
-- this thread's request counter), then random bits. Time-ordered ids are what the gateway's unique index sees.
local function uuid7()
   local ms = os.time() * 1000 + sequence % 1000
   local clock = string.format("%04x%04x%04x", math.floor(ms / 4294967296) % 65536,
      math.floor(ms / 65536) % 65536, ms % 65536)
   local out = {}
   for i = 1, 19 do
      local v = (i == 4) and math.random(8, 11) or math.random(0, 15)
      out[i] = hex:sub(v + 1, v + 1)
   end
   local r = table.concat(out)
   return clock:sub(1, 8) .. "-" .. clock:sub(9, 12) .. "-7" .. r:sub(1, 3) .. "-" .. r:sub(4, 7) .. "-" .. r:sub(8, 19)
end

local function event(trace, token, n)
   local index = (n % #TYPES) + 1
   local kind = TYPES[index]
   local fields = kind:format(index == 3 and n % 2 or n % 7 + 2)  -- feedback: value 0|1; others: 2..8
   return string.format('{"id":"%s",%s,"trace_id":"%s","token":"%s","ts":%d000,"dwell_ms":%d}',
      uuid7(), fields, trace, token, os.time(), 100 + n % 5000)
end

function request()
   sequence = sequence + 1
   local picked = traces[math.random(#traces)]
   local events = {}
   for i = 1, per_request do
      events[i] = event(picked[1], picked[2], sequence + i)
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
   local n = 0
   if status == 200 then
      local _, count = body:gsub('"status":"accepted"', "")
      n = count
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

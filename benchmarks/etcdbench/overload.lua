-- wrk script of benchmarks/overload.py: puts of new keys through dkv's /v0 API, answers counted by status.
--
--   wrk -tT -cC -dD -s overload.lua http://127.0.0.1:PORT -- TIMED DELAY_MS TAG VALUE_SIZE [KEYS]
--
-- TIMED     1: time every admitted (2xx) answer into a histogram. Only valid with one
--           connection per thread (-tN -cN): a thread's requests and answers then alternate,
--           so the answer is the one to the last request sent (wrk times every answer,
--           refused ones included, and cannot tell them apart).
-- DELAY_MS  mean pause before each request of a connection (uniform in 0.5x .. 1.5x), to
--           offer a chosen rate from many connections (wrk's delay() hook); 0: none (closed
--           loop). A connection whose last answer was a 429 waits its Retry-After instead,
--           jittered (uniform in 0.5x .. 1.5x, mean Retry-After), so a refusal is not resent at
--           once and the connections refused in one burst do not all come back together (a
--           fixed wait keeps them in step: waves of requests a second apart, each refused
--           nearly whole). wrk's delay() does not say which connection it is for, but it is called
--           exactly once before each connection's next request: each 429 owes one such wait,
--           paid by the next delay() call of the thread (connections are interchangeable, so
--           the waits and their number are those of per-connection back-off).
-- TAG       a string in every key.
-- KEYS      0 (the default): every request puts a new key (TAG, the thread and a counter), so keys
--           never repeat; N > 0: each request puts one of N keys (TAG-0 .. TAG-N-1) drawn at random,
--           a new revision of a key of a fixed set, so the data stays bounded (give every run of
--           one benchmark the same TAG).
--
-- done() prints one line "OVERLOAD_RESULT {json}": answers by class (2xx, 429, other),
-- 429s without Retry-After, Retry-After waits taken (backoffs), socket errors, and the histogram of admitted latencies
-- (bucket b holds latencies in [10^(b/50), 10^((b+1)/50)) microseconds).

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } overload_timespec;
int clock_gettime(int clk_id, overload_timespec *tp);
]]
local ts = ffi.new("overload_timespec")
local CLOCK_MONOTONIC = 1
local BUCKETS_PER_DECADE = 50

local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local digits = { math.floor(v / 262144) % 64, math.floor(v / 4096) % 64, math.floor(v / 64) % 64, v % 64 }
      local keep = b == nil and 2 or (c == nil and 3 or 4)
      for d = 1, 4 do
         out[#out + 1] = d <= keep and ALPHABET:sub(digits[d] + 1, digits[d] + 1) or "="
      end
   end
   return table.concat(out)
end

-- In the main state: every thread, to read its counts in done().
local threads = {}
local made = 0

function setup(thread)
   made = made + 1
   thread:set("id", made)
   threads[#threads + 1] = thread
end

-- In each thread's state.
local timed, delay_ms, tag, value, keys
local sent, started = 0, nil
-- Retry-After waits (ms) owed by connections refused with 429, first owed first.
local owed, owed_first, owed_last = {}, 1, 0
ok, refused, other, no_retry_after, backoffs = 0, 0, 0, 0, 0
hist = {}

function init(args)
   timed = tonumber(args[1]) == 1
   delay_ms = tonumber(args[2]) or 0
   tag = args[3] or "ov"
   value = b64(string.rep("v", tonumber(args[4]) or 100))
   keys = tonumber(args[5]) or 0
   math.randomseed(id * 7919 + os.time())
end

function delay()
   if owed_first <= owed_last then
      local wait = owed[owed_first]
      owed[owed_first] = nil
      owed_first = owed_first + 1
      backoffs = backoffs + 1
      return wait * (0.5 + math.random())
   end
   if delay_ms <= 0 then
      return 0
   end
   return delay_ms * (0.5 + math.random())
end

function request()
   sent = sent + 1
   local name
   if keys > 0 then
      name = tag .. "-" .. math.random(0, keys - 1)
   else
      name = tag .. "-" .. id .. "-" .. sent
   end
   local body = '{"key":"' .. b64(name) .. '","value":"' .. value .. '"}'
   if timed then
      started = now_us()
   end
   return wrk.format("POST", "/v0/kv", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
      if timed and started ~= nil then
         local us = math.max(now_us() - started, 1)
         local b = math.floor(BUCKETS_PER_DECADE * math.log10(us))
         hist[b] = (hist[b] or 0) + 1
      end
   elseif status == 429 then
      refused = refused + 1
      local after = tonumber(headers["Retry-After"] or headers["retry-after"])
      if after == nil then
         no_retry_after = no_retry_after + 1
         after = 1
      end
      owed_last = owed_last + 1
      owed[owed_last] = after * 1000
   else
      other = other + 1
   end
   started = nil
end

function done(summary, latency, requests)
   local totals = { ok = 0, refused = 0, other = 0, no_retry_after = 0, backoffs = 0 }
   local merged = {}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
      for b, n in pairs(thread:get("hist") or {}) do
         merged[b] = (merged[b] or 0) + n
      end
   end
   local cells = {}
   for b, n in pairs(merged) do
      cells[#cells + 1] = string.format("[%d,%d]", b, n)
   end
   local e = summary.errors
   io.write(string.format(
      'OVERLOAD_RESULT {"ok":%d,"refused":%d,"other":%d,"no_retry_after":%d,"backoffs":%d,"requests":%d,' ..
      '"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"hist":[%s]}\n',
      totals.ok, totals.refused, totals.other, totals.no_retry_after, totals.backoffs, summary.requests,
      summary.duration,
      e.connect, e.read, e.write, e.timeout, table.concat(cells, ",")))
end

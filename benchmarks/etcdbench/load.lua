-- wrk script of benchmarks/etcdbench/load.py (benchmarks/vs_etcd.py): loads dkv and etcd in the same way.
--
--   wrk -t2 -c64 -d10 -s load.lua http://127.0.0.1:PORT -- SYSTEM OP KEY_SIZE VALUE_SIZE TAG NKEYS QUOTA DONE_DIR
--
-- SYSTEM   dkv | etcd
-- OP       write: put a new unique key per request
--          read:  linearizable read of a random prepopulated key (0 .. NKEYS-1)
--          load:  like write, but each thread stops after QUOTA successful
--                 puts and creates DONE_DIR/<thread id> (wrk itself runs until
--                 its duration ends or it gets SIGINT)
-- TAG      0..255, first byte of every written key: unique per wrk process
--          against one cluster, so keys never repeat across runs
--
-- Keys are KEY_SIZE bytes: TAG, the thread index, then a big-endian counter
-- (prepopulated key i is 0x00 0x00 then i). Values are VALUE_SIZE fixed
-- pseudo-random bytes. Keys and values travel as base64 (URL-safe and
-- unpadded in dkv's GET path).
--
-- done() prints one line "VS_ETCD_RESULT {json}" with requests, non-2xx
-- responses, reads that found no value, socket errors and wrk's latency
-- percentiles (microseconds) for the Python driver to parse.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- Base64 of s with the given alphabet; padded with "=" if pad is true.
local function base64(s, alphabet, pad)
   local out = {}
   local n = #s
   for i = 1, n, 3 do
      local a, b, c = s:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(v / 262144) % 64
      local c2 = math.floor(v / 4096) % 64
      local c3 = math.floor(v / 64) % 64
      local c4 = v % 64
      out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1) .. alphabet:sub(c2 + 1, c2 + 1)
      if b then
         out[#out + 1] = alphabet:sub(c3 + 1, c3 + 1)
      elseif pad then
         out[#out + 1] = "="
      end
      if c then
         out[#out + 1] = alphabet:sub(c4 + 1, c4 + 1)
      elseif pad then
         out[#out + 1] = "="
      end
   end
   return table.concat(out)
end

-- n as a big-endian string of width bytes.
local function be(n, width)
   local bytes = {}
   for i = width, 1, -1 do
      bytes[i] = n % 256
      n = math.floor(n / 256)
   end
   return string.char(unpack(bytes))
end

-- Minimal JSON string escaping for the error sample.
local function json_string(s)
   s = s:gsub('[%c"\\\128-\255]', function(ch)
      return string.format("\\u%04x", ch:byte())
   end)
   return '"' .. s .. '"'
end

-- setup/done environment: the thread objects, numbered in creation order.
local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   threads[#threads + 1] = thread
end

-- running environment (one per thread) -------------------------------------

local system, op, key_size, tag, nkeys, quota, done_dir
local value_b64, headers
local counter = 0
local stopped = false
ok, non2xx, misses, error_sample = 0, 0, 0, ""

function init(args)
   system = args[1]
   op = args[2]
   key_size = tonumber(args[3])
   local value_size = tonumber(args[4])
   tag = tonumber(args[5])
   nkeys = tonumber(args[6])
   quota = tonumber(args[7])
   done_dir = args[8]
   if system ~= "dkv" and system ~= "etcd" then
      error("system must be dkv or etcd, not " .. tostring(system))
   end
   if op ~= "write" and op ~= "read" and op ~= "load" then
      error("op must be write, read or load, not " .. tostring(op))
   end
   local chars = {}
   for i = 1, value_size do
      chars[i] = string.char((i * 131 + tid * 17 + 7) % 256)
   end
   value_b64 = base64(table.concat(chars), B64, true)
   headers = { ["Content-Type"] = "application/json" }
   math.randomseed(os.time() + tid * 7919)
end

local function put_request(key)
   local body = '{"key":"' .. base64(key, B64, true) .. '","value":"' .. value_b64 .. '"}'
   if system == "dkv" then
      return wrk.format("POST", "/v0/kv", headers, body)
   end
   return wrk.format("POST", "/v3/kv/put", headers, body)
end

function request()
   if op == "read" then
      local key = string.char(0, 0) .. be(math.random(0, nkeys - 1), key_size - 2)
      if system == "dkv" then
         return wrk.format("GET", "/v0/kv/key/" .. base64(key, B64URL, false))
      end
      return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. base64(key, B64, true) .. '"}')
   end
   local key = string.char(tag, tid) .. be(counter, key_size - 2)
   counter = counter + 1
   return put_request(key)
end

function response(status, hdrs, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if error_sample == "" then
         error_sample = status .. " " .. (body or ""):sub(1, 200)
      end
      return
   end
   ok = ok + 1
   -- etcd answers 200 without "kvs" for an absent key.
   if op == "read" and system == "etcd" and not (body or ""):find('"kvs"', 1, true) then
      misses = misses + 1
      if error_sample == "" then
         error_sample = "no kvs: " .. (body or ""):sub(1, 200)
      end
   end
   if op == "load" and not stopped and ok >= quota then
      stopped = true
      local f = io.open(done_dir .. "/" .. tid, "w")
      if f then
         f:write(ok, "\n")
         f:close()
      end
      wrk.thread:stop()
   end
end

-- done environment -----------------------------------------------------------

function done(summary, latency, requests)
   local t_ok, t_non2xx, t_misses, sample, written = 0, 0, 0, "", 0
   for _, thread in ipairs(threads) do
      t_ok = t_ok + (thread:get("ok") or 0)
      t_non2xx = t_non2xx + (thread:get("non2xx") or 0)
      t_misses = t_misses + (thread:get("misses") or 0)
      local s = thread:get("error_sample") or ""
      if sample == "" then
         sample = s
      end
   end
   local e = summary.errors
   local mean = latency.mean
   if mean ~= mean then -- NaN when nothing completed
      mean = 0
   end
   io.write(string.format(
      'VS_ETCD_RESULT {"requests":%d,"ok":%d,"non2xx":%d,"misses":%d,"duration_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d},' ..
      '"threads":%d,"error_sample":%s}\n',
      summary.requests, t_ok, t_non2xx, t_misses, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), mean, latency.max,
      #threads, json_string(sample)))
end

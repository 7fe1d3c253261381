-- wrk script of benchmarks/etcdbench/load.py (benchmarks/vs_etcd.py): loads dkv and etcd in the same way.
--
--   wrk -t2 -c64 -d10 -s load.lua http://127.0.0.1:PORT -- API OP KEY_SIZE VALUE_SIZE TAG NKEYS QUOTA DONE_DIR RANGE_KEYS
--
-- API      v0: dkv's own API (POST /v0/kv, GET /v0/kv/key/{b64});
--          v3: etcd's JSON gateway (POST /v3/kv/put, /v3/kv/range, /v3/kv/txn),
--          the same bytes whichever system answers
-- OP       write: put a new unique key per request
--          read:  linearizable read of a random prepopulated key (0 .. NKEYS-1)
--          range: (v3) linearizable range over a random one of NKEYS prefixes,
--                 each with RANGE_KEYS keys written beforehand
--          cas:   (v3) compare-and-swap txn, see below
--          load:  like write, but each thread stops after QUOTA successful
--                 puts and creates DONE_DIR/<thread id> (wrk itself runs until
--                 its duration ends or it gets SIGINT)
-- TAG      1..255, first byte of every written key: unique per wrk process
--          against one cluster, so keys never repeat across runs
--
-- Keys are KEY_SIZE bytes: TAG, the thread index, then a big-endian counter
-- (prepopulated key i is 0x00 0x00 then i; key j under range prefix p is
-- 0x00 0x01, p on KEY_SIZE - 3 bytes, then the byte j). Values are VALUE_SIZE
-- fixed pseudo-random bytes. Keys and values travel as base64 (URL-safe and
-- unpadded in dkv's GET path).
--
-- cas: every thread keeps a pool of keys of its own, each with the
-- mod_revision its last answer showed (0 for a key not yet written, which
-- etcd compares as absent). A request takes a key no other request of the
-- thread has in flight (or a new one) and sends
--   compare mod_revision(key) == last seen
--   success: put key, then range key (keys_only)   failure: range key (keys_only)
-- The ranges are there because wrk does not say which request an answer
-- belongs to: every answer names its key and its current mod_revision, which
-- becomes the key's "last seen" and frees it. No two requests contend for a
-- key, so with etcd's semantics every CAS succeeds; a failed one (an answer
-- without "succeeded": true) is counted apart, as an answer, not an error.
--
-- Answers are checked: non-2xx counts as non2xx (a 429, load shed with "too
-- many requests", also as rejected); a v3 read without "kvs", a
-- range whose count is not RANGE_KEYS, or a txn answer without a known key
-- and its mod_revision counts as a miss.
--
-- done() prints one line "VS_ETCD_RESULT {json}" with requests, non-2xx
-- responses, misses, CAS outcomes, socket errors and wrk's latency
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

local api, op, key_size, tag, nkeys, quota, done_dir, range_keys
local value_b64, headers
local counter = 0
local stopped = false
ok, non2xx, misses, cas_succeeded, cas_failed, error_sample = 0, 0, 0, 0, 0, ""
rejected = 0

-- cas: last seen mod_revision (a decimal string) of every key of this
-- thread, by its base64; the keys not in flight.
local seen, idle = {}, {}

local OPS = { v0 = { write = true, read = true, load = true },
              v3 = { write = true, read = true, load = true, range = true, cas = true } }

function init(args)
   api = args[1]
   op = args[2]
   key_size = tonumber(args[3])
   local value_size = tonumber(args[4])
   tag = tonumber(args[5])
   nkeys = tonumber(args[6])
   quota = tonumber(args[7])
   done_dir = args[8]
   range_keys = tonumber(args[9] or 100)
   if OPS[api] == nil then
      error("api must be v0 or v3, not " .. tostring(api))
   end
   if not OPS[api][op] then
      error("op " .. tostring(op) .. " is not one of API " .. api)
   end
   local chars = {}
   for i = 1, value_size do
      chars[i] = string.char((i * 131 + tid * 17 + 7) % 256)
   end
   value_b64 = base64(table.concat(chars), B64, true)
   headers = { ["Content-Type"] = "application/json" }
   math.randomseed(os.time() + tid * 7919)
end

local function post(path, body)
   return wrk.format("POST", path, headers, body)
end

-- A key of this process and thread never written before, as base64.
local function new_key()
   local key = string.char(tag, tid) .. be(counter, key_size - 2)
   counter = counter + 1
   return base64(key, B64, true)
end

-- A range over prefix p: range_end is the prefix plus one as a number (what
-- etcd's --prefix sends, except that a prefix ending in 0xFF carries rather
-- than shortens: the same keys either way).
local function range_request()
   local p = math.random(0, nkeys - 1)
   local prefix = string.char(0, 1) .. be(p, key_size - 3)
   local stop = string.char(0, 1) .. be(p + 1, key_size - 3)
   if p + 1 == 256 ^ (key_size - 3) then
      stop = string.char(0, 2)
   end
   return post("/v3/kv/range",
      '{"key":"' .. base64(prefix, B64, true) .. '","range_end":"' .. base64(stop, B64, true) .. '"}')
end

local function cas_request()
   local key = table.remove(idle)
   if key == nil then
      key = new_key()
      seen[key] = "0"
   end
   local range = '{"request_range":{"key":"' .. key .. '","keys_only":true}}'
   return post("/v3/kv/txn",
      '{"compare":[{"key":"' .. key .. '","target":"MOD","result":"EQUAL","mod_revision":"' .. seen[key] .. '"}],' ..
      '"success":[{"request_put":{"key":"' .. key .. '","value":"' .. value_b64 .. '"}},' .. range .. '],' ..
      '"failure":[' .. range .. ']}')
end

function request()
   if op == "read" then
      local key = string.char(0, 0) .. be(math.random(0, nkeys - 1), key_size - 2)
      if api == "v0" then
         return wrk.format("GET", "/v0/kv/key/" .. base64(key, B64URL, false))
      end
      return post("/v3/kv/range", '{"key":"' .. base64(key, B64, true) .. '"}')
   elseif op == "range" then
      return range_request()
   elseif op == "cas" then
      return cas_request()
   end
   local body = '{"key":"' .. new_key() .. '","value":"' .. value_b64 .. '"}'
   return post(api == "v0" and "/v0/kv" or "/v3/kv/put", body)
end

-- Keep the first wrong answer of the thread as the run's error sample.
local function sample(head, body)
   if error_sample == "" then
      error_sample = head .. (body or ""):sub(1, 200)
   end
end

local function miss(why, body)
   misses = misses + 1
   sample(why .. ": ", body)
end

-- A txn answer: its key becomes idle with the mod_revision it shows.
local function cas_answer(body)
   local key = body:match('"key"%s*:%s*"([^"]*)"')
   local rev = body:match('"mod_revision"%s*:%s*"?(%d+)')
   if key == nil or rev == nil or seen[key] == nil then
      return miss("txn answer without one of our keys and its mod_revision", body)
   end
   seen[key] = rev
   idle[#idle + 1] = key
   if body:find('"succeeded"%s*:%s*true') then
      cas_succeeded = cas_succeeded + 1
   else
      cas_failed = cas_failed + 1
   end
end

function response(status, hdrs, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if status == 429 then
         rejected = rejected + 1
      end
      sample(status .. " ", body)
      return
   end
   ok = ok + 1
   body = body or ""
   -- etcd's gateway answers 200 without "kvs" (and "count") for an absent key.
   if op == "read" and api == "v3" and not body:find('"kvs"', 1, true) then
      miss("no kvs", body)
   elseif op == "range" and tonumber(body:match('"count"%s*:%s*"?(%d+)') or 0) ~= range_keys then
      miss("count is not " .. range_keys, body)
   elseif op == "cas" then
      cas_answer(body)
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
   local t_ok, t_non2xx, t_misses, t_cas_ok, t_cas_failed, sample = 0, 0, 0, 0, 0, ""
   local t_rejected = 0
   for _, thread in ipairs(threads) do
      t_ok = t_ok + (thread:get("ok") or 0)
      t_non2xx = t_non2xx + (thread:get("non2xx") or 0)
      t_rejected = t_rejected + (thread:get("rejected") or 0)
      t_misses = t_misses + (thread:get("misses") or 0)
      t_cas_ok = t_cas_ok + (thread:get("cas_succeeded") or 0)
      t_cas_failed = t_cas_failed + (thread:get("cas_failed") or 0)
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
      'VS_ETCD_RESULT {"requests":%d,"ok":%d,"non2xx":%d,"rejected":%d,"misses":%d,' ..
      '"cas_succeeded":%d,"cas_failed":%d,"duration_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d},' ..
      '"threads":%d,"error_sample":%s}\n',
      summary.requests, t_ok, t_non2xx, t_rejected, t_misses, t_cas_ok, t_cas_failed, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), mean, latency.max,
      #threads, json_string(sample)))
end

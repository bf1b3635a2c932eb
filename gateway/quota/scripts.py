"""The Redis side of the limiter: three Lua scripts, each one atomic call.

State per subject (a key or a tenant), two Redis keys sharing the tenant's hash tag so one
script call touches a single cluster slot:

    <prefix>q:{<tenant>}:k:<key id>:st   HASH  the counters (below)
    <prefix>q:{<tenant>}:k:<key id>:fl   ZSET  leases: member "<request id>:<nano-USD reserved>",
                                               score = lease end (ms)
    (a tenant's keys are <prefix>q:{<tenant>}:t:st and :fl)

    st fields   n, tk    requests and tokens counted in the window
                n<b>, t<b>  the same for bucket b (b = floor(ms / bucket_ms), bucket_ms = window / 60)
                ob       the oldest bucket that may hold something
                rs       nano-USD reserved by leases (requests in flight)
                pp, sv   the budget period's id, nano-USD spent in it (settled)
                lc       when to look for leases that ran out next (ms)

The rate window is sliding, in 60 buckets: a request is counted from its admission until
the end of the bucket 60 after its own, so for at least one window length (at most one
bucket, 1 s of 60, more). Admission needs counted + 1 <= rpm (and counted tokens + the
estimate <= tpm), so in ANY window-long interval the admitted requests stay within rpm:
at the last admission in the interval every earlier one there was still counted.

RESERVE checks every subject and, only if all admit, counts the request in each: it joins
the current bucket, takes a lease (only for subjects with max_parallel or a budget) and
reserves the estimated cost (spent + reserved + estimate <= budget). Time is Redis' own
clock (TIME), the same for every replica. About five commands per subject.

SETTLE replaces estimates by what the requests used: the lease is released, the actual
cost joins the period's spend, the bucket's tokens are corrected (if still counted). One
call carries every settlement a replica queued for the same subjects in a few ms.

A lease that ends unsettled (its replica died) is found by a later RESERVE (looked for
once a second): its reservation is counted as spent, never forgotten, so a crash cannot
lift a budget.

PEEK reads a subject the way RESERVE would see it, without changing anything (admin API).
"""

from __future__ import annotations

import hashlib

_COMMON = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format('%d', x) end

-- days since 1970-01-01 -> year, month (H. Hinnant's civil_from_days)
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- the first day of month m of year y -> days since 1970-01-01
local function first_day(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100)
    + math.floor((153 * mp + 2) / 5) - 719468
end

-- budget period code (0 none, 1 day, 2 month, 3 total) -> period id, end (ms; 0: none)
local function period(code)
  if code == 1 then
    local d = math.floor(now / 86400000)
    return 'd' .. int(d), (d + 1) * 86400000
  elseif code == 2 then
    local y, m = civil(math.floor(now / 86400000))
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return 'm' .. int(y) .. '-' .. int(m), first_day(ny, nm) * 86400000
  elseif code == 3 then
    return 't', 0
  end
  return '', 0
end

-- the number after the last ':' of a lease ("<request id>:<nano-USD>")
local function amount_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

local function num(x) return tonumber(x or '0') or 0 end

-- Drop the buckets that left the window [lo, ...] from the counters in `f` (n, tk, ob)
-- and find the oldest bucket still holding something; writes st. Returns n, tk, ob.
local function trim(st, n, tk, ob, lo, cur)
  if ob >= lo then return n, tk, ob end
  local fields = {}
  if lo - ob > 61 then                      -- idle for more than a window: all of it left
    for b = ob, ob + 60 do fields[#fields + 1] = 'n' .. int(b); fields[#fields + 1] = 't' .. int(b) end
    redis.call('HDEL', st, unpack(fields))
    redis.call('HSET', st, 'n', '0', 'tk', '0', 'ob', int(cur))
    return 0, 0, cur
  end
  for b = ob, lo - 1 do fields[#fields + 1] = 'n' .. int(b); fields[#fields + 1] = 't' .. int(b) end
  local got = redis.call('HMGET', st, unpack(fields))
  for j = 1, #got, 2 do n, tk = n - num(got[j]), tk - num(got[j + 1]) end
  redis.call('HDEL', st, unpack(fields))
  -- the next bucket holding something (one look per bucket length, not per request)
  local nxt = cur
  if n > 0 then
    local names = {}
    for b = lo, cur do names[#names + 1] = 'n' .. int(b) end
    local counts = redis.call('HMGET', st, unpack(names))
    for j = 1, #counts do
      if num(counts[j]) > 0 then nxt = lo + j - 1; break end
    end
  else
    n, tk = 0, 0
  end
  redis.call('HSET', st, 'n', int(n), 'tk', int(tk), 'ob', int(nxt))
  return n, tk, nxt
end

-- When enough of the window's tokens will have left it for `need` more (ms from now).
local function tokens_free_in(st, ob, cur, need, bucket, now)
  local names = {}
  for b = ob, cur do names[#names + 1] = 't' .. int(b) end
  local got = redis.call('HMGET', st, unpack(names))
  local freed = 0
  for j = 1, #got do
    freed = freed + num(got[j])
    if freed >= need then return (ob + j - 1 + 61) * bucket - now end
  end
  return (cur + 61) * bucket - now
end
"""

RESERVE = _COMMON + r"""
-- KEYS: per subject (key first, then tenant): st (HASH), fl (ZSET)
-- ARGV[1]: "window_ms,lease_ms" then per subject ",rpm,tpm,max_parallel,budget_nano,period_code"
--          (0: no limit of that kind)
-- ARGV[2]: the requests, in arrival order: "request_id,est_tokens,est_nano" joined by ";"
-- Each request is decided in turn against the state its predecessors left, exactly as if
-- each were its own call; the state is read once and written once per subject.
local a = {}
for v in string.gmatch(ARGV[1], '[^,]+') do a[#a + 1] = v end
local window, lease = tonumber(a[1]), tonumber(a[2])
local bucket = math.max(1, math.floor(window / 60))
local cur = math.floor(now / bucket)
local lo = cur - 60
local nsub = #KEYS / 2
local snow = int(now)
local nb, tb = 'n' .. int(cur), 't' .. int(cur)
local lease_end = int(now + lease)

local seen = {}
for i = 1, nsub do
  local st, fl = KEYS[2 * i - 1], KEYS[2 * i]
  local o = 2 + (i - 1) * 5
  local rpm, tpm, par, budget = tonumber(a[o + 1]), tonumber(a[o + 2]), tonumber(a[o + 3]), tonumber(a[o + 4])
  local pid, pend = period(tonumber(a[o + 5]))
  local leased = par > 0 or budget > 0
  local f = redis.call('HMGET', st, 'n', 'tk', 'ob', 'rs', 'pp', 'sv', 'lc', nb, tb)
  local n, tk, reserved, spent = num(f[1]), num(f[2]), num(f[4]), num(f[6])
  local ob = tonumber(f[3]) or cur
  n, tk, ob = trim(st, n, tk, ob, lo, cur)
  if f[5] ~= pid then                       -- a new budget period
    spent = 0
    redis.call('HSET', st, 'pp', pid, 'sv', '0')
  end
  local inflight = 0
  if leased then
    if num(f[7]) <= now then                -- leases that ran out unsettled: their reservation is spent
      local dead = redis.call('ZRANGEBYSCORE', fl, '-inf', int(now))
      if #dead > 0 then
        local charged = 0
        for _, m in ipairs(dead) do charged = charged + amount_of(m) end
        redis.call('ZREMRANGEBYSCORE', fl, '-inf', int(now))
        if charged ~= 0 then
          redis.call('HINCRBY', st, 'rs', int(-charged))
          redis.call('HINCRBY', st, 'sv', int(charged))
          reserved, spent = reserved - charged, spent + charged
        end
      end
      redis.call('HSET', st, 'lc', int(now + 1000))
    end
    if par > 0 then inflight = redis.call('ZCOUNT', fl, '(' .. int(now), '+inf') end   -- live leases
  end
  seen[i] = {st = st, fl = fl, rpm = rpm, tpm = tpm, par = par, budget = budget, pend = pend, spend = int(spent),
             leased = leased, n = n, ob = ob, tk = tk, inflight = inflight, spent = spent, reserved = reserved,
             nb = num(f[8]), tb = num(f[9]), admitted = 0, leases = {}}
end

local head = {snow, int((cur + 61) * bucket - now)}
for i = 1, nsub do
  local s = seen[i]
  head[#head + 1] = table.concat({int(s.n), int((s.ob + 61) * bucket - now), int(s.tk), int(s.inflight), s.spend,
                                  int(s.reserved), int(s.pend)}, ',')
end
local out = {table.concat(head, ',')}
for rid, et, en in string.gmatch(ARGV[2], '([^,;]+),(%d+),(%d+)') do
  local est_tok, est_nano = tonumber(et), tonumber(en)
  local kind, who, retry = 0, 0, 0
  for i = 1, nsub do
    local s = seen[i]
    local k, r = 0, 0
    if s.budget > 0 and (s.spent + s.reserved >= s.budget or s.spent + s.reserved + est_nano > s.budget) then
      k = 4
      if s.pend > 0 then r = s.pend - now end
    elseif s.rpm > 0 and s.n + 1 > s.rpm then
      k, r = 1, (s.ob + 61) * bucket - now
    elseif s.tpm > 0 and est_tok > s.tpm then
      k = 5
    elseif s.tpm > 0 and s.tk + est_tok > s.tpm then
      k, r = 2, tokens_free_in(s.st, s.ob, cur, s.tk + est_tok - s.tpm, bucket, now)
    elseif s.par > 0 and s.inflight + 1 > s.par then
      k, r = 3, 1000
    end
    if k ~= 0 then kind, who, retry = k, i, r; break end
  end
  if kind == 0 then
    out[#out + 1] = '1'
    for i = 1, nsub do
      local s = seen[i]
      if s.n == 0 then s.ob = cur end
      s.n, s.tk = s.n + 1, s.tk + est_tok
      s.nb, s.tb = s.nb + 1, s.tb + est_tok
      s.admitted = s.admitted + 1
      if s.leased then                      -- reservations are held by leases
        s.reserved = s.reserved + est_nano
        s.inflight = s.inflight + 1
        local l = s.leases
        l[#l + 1] = lease_end
        l[#l + 1] = rid .. ':' .. en
      end
    end
  else
    out[#out + 1] = int(kind) .. ',' .. int(who) .. ',' .. int(retry)
  end
end

for i = 1, nsub do
  local s = seen[i]
  if s.admitted > 0 then
    redis.call('HSET', s.st, 'n', int(s.n), 'tk', int(s.tk), 'rs', int(s.reserved), 'ob', int(s.ob),
               nb, int(s.nb), tb, int(s.tb))
    if #s.leases > 0 then redis.call('ZADD', s.fl, unpack(s.leases)) end
  end
end
return table.concat(out, ';')
"""


SETTLE = _COMMON + r"""
-- KEYS: as for RESERVE. ARGV[1]: settlements "request_id,at_ms,est_tokens,tokens,est_nano,nano"
-- joined by ";". ARGV[2]: "window_ms" then per subject ",period_code,leased (0/1)".
local a = {}
for v in string.gmatch(ARGV[2], '[^,]+') do a[#a + 1] = tonumber(v) end
local bucket = math.max(1, math.floor(a[1] / 60))
local items = {}
for item in string.gmatch(ARGV[1], '[^;]+') do
  local rid, at, et, tk, en, nano = string.match(item, '^([^,]+),(%d+),(%d+),(%d+),(%d+),(%d+)$')
  if rid then items[#items + 1] = {rid, tonumber(at), tonumber(et), tonumber(tk), tonumber(en), tonumber(nano)} end
end
for i = 1, #KEYS / 2 do
  local st, fl = KEYS[2 * i - 1], KEYS[2 * i]
  local pid = period(a[2 * i])
  local leased = a[2 * i + 1] == 1
  local f = redis.call('HMGET', st, 'pp', 'ob')
  if f[1] ~= pid then redis.call('HSET', st, 'pp', pid, 'sv', '0') end
  local ob = tonumber(f[2]) or 0
  local spent, released, tokens = 0, 0, 0
  local fix = {}
  local held = {}                           -- held[j]: item j's lease was still there (released now)
  if leased and #items > 0 then
    local members = {}
    for j, it in ipairs(items) do members[j] = it[1] .. ':' .. int(it[5]) end
    local scores = redis.call('ZMSCORE', fl, unpack(members))
    local gone = {}
    for j = 1, #members do
      if scores[j] then held[j] = true; gone[#gone + 1] = members[j] end
    end
    if #gone > 0 then redis.call('ZREM', fl, unpack(gone)) end
  end
  for j, it in ipairs(items) do
    local at, et, tk, en, nano = it[2], it[3], it[4], it[5], it[6]
    if not leased then
      spent = spent + nano
    elseif held[j] then
      released, spent = released + en, spent + nano
    elseif nano > en then
      -- the lease ran out first and its estimate was charged then: add only what exceeds it
      spent = spent + nano - en
    end
    local b = math.floor(at / bucket)
    if tk ~= et and b >= ob then            -- still counted: its bucket takes the actual tokens
      fix[b] = (fix[b] or 0) + tk - et
      tokens = tokens + tk - et
    end
  end
  for b, d in pairs(fix) do
    if d ~= 0 then redis.call('HINCRBY', st, 't' .. int(b), int(d)) end
  end
  if released ~= 0 then redis.call('HINCRBY', st, 'rs', int(-released)) end
  if spent ~= 0 then redis.call('HINCRBY', st, 'sv', int(spent)) end
  if tokens ~= 0 then redis.call('HINCRBY', st, 'tk', int(tokens)) end
end
return #items
"""

PEEK = _COMMON + r"""
-- ARGV[1]: "window_ms" then per subject ",period_code". Same answer as RESERVE's per
-- subject part, read-only (leases that ran out count as spent, as RESERVE would).
local a = {}
for v in string.gmatch(ARGV[1], '[^,]+') do a[#a + 1] = tonumber(v) end
local bucket = math.max(1, math.floor(a[1] / 60))
local cur = math.floor(now / bucket)
local lo = cur - 60
local out = {int(now)}
for i = 1, #KEYS / 2 do
  local st, fl = KEYS[2 * i - 1], KEYS[2 * i]
  local pid, pend = period(a[1 + i])
  local f = redis.call('HMGET', st, 'pp', 'sv', 'rs')
  local spent, reserved = num(f[2]), num(f[3])
  if f[1] ~= pid then spent = 0 end
  local names = {}
  for b = lo, cur do names[#names + 1] = 'n' .. int(b); names[#names + 1] = 't' .. int(b) end
  local got = redis.call('HMGET', st, unpack(names))
  local n, tk, oldest = 0, 0, -1
  for j = 1, #got, 2 do
    local c = num(got[j])
    n, tk = n + c, tk + num(got[j + 1])
    if c > 0 and oldest < 0 then oldest = lo + (j - 1) / 2 end
  end
  local dead = redis.call('ZRANGEBYSCORE', fl, '-inf', int(now))
  for _, m in ipairs(dead) do
    local held = amount_of(m)
    spent, reserved = spent + held, reserved - held
  end
  local inflight = redis.call('ZCARD', fl) - #dead
  local reset = 0
  if oldest >= 0 then reset = (oldest + 61) * bucket - now end
  out[#out + 1] = table.concat({int(n), int(reset), int(tk), int(reset), int(inflight), int(spent),
                                int(reserved), int(pend)}, ',')
end
return table.concat(out, ',')
"""


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()

"""The Redis side of the limiter: three Lua scripts, each one atomic call.

State per subject (a key or a tenant): one Redis hash, under the tenant's hash tag so one
script call touches a single cluster slot:

    <prefix>q:{<tenant>}:k:<key id>:st   (a tenant's: <prefix>q:{<tenant>}:t:st)

    n, tk        requests and tokens counted in the window
    n<b>, t<b>   the same for rate bucket b (b = floor(ms / bucket_ms), bucket_ms = window / 60)
    ob           the oldest rate bucket that may hold something
    if, rs       leases held (requests in flight) and the nano-USD they reserve
    l<e>, m<e>   the same for the leases that run out at e * lease_bucket_ms
                 (lease_bucket_ms = lease / 60)
    lw, lh       the oldest lease bucket not yet charged, the newest one written
    pp, sv       the budget period's id, nano-USD spent in it (settled)

The rate window is sliding, in 60 buckets: a request is counted from its admission until
the end of the bucket 60 after its own, so for at least one window length (at most one
bucket, 1 s of 60, more). Admission needs counted + 1 <= rpm (and counted tokens + the
estimate <= tpm), so in ANY window-long interval the admitted requests stay within rpm:
at the last admission in the interval every earlier one there was still counted.

RESERVE takes the requests of one subject set that reached a replica together, in arrival
order, and decides each in turn against the state the earlier ones left (as one call per
request would): it checks every subject and, only if all admit, counts the request in
each: it joins the current rate bucket, takes a lease (only for subjects with
max_parallel or a budget) and reserves the estimated cost (spent + reserved + estimate <=
budget). Time is Redis' own clock (TIME), the same for every replica. The state is read
once and written once per subject and call (HMGET, HSET), whatever the number of requests.

SETTLE replaces estimates by what the requests used: their leases are released, the
actual cost joins the period's spend, the rate buckets' tokens are corrected (if still
counted). A replica sends one call per subject set every few ms with its settlements
summed by lease bucket and rate bucket, so its cost does not grow with the requests.

A lease is counted in the bucket of when it runs out (lease_s after admission, at most
one lease bucket, 1/60 of it, more). Leases that run out unsettled (their replica died)
are found by a later RESERVE once their bucket has passed: their reservations are counted
as spent, never forgotten, so a crash cannot lift a budget; a late settlement then adds
only what the request used beyond its estimate.

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

local function num(x) return tonumber(x or '0') or 0 end

-- Leases in the lease buckets lw .. min(cl, lh) ran out unsettled: (their number, the
-- nano-USD they reserved); `drop` removes them (the caller charges them).
local function run_out(st, lw, lh, cl, drop)
  if lw == nil or lw > cl then return 0, 0 end
  local last = math.min(cl, lh or cl, lw + 255)
  if last < lw then return 0, 0 end
  local names = {}
  for e = lw, last do names[#names + 1] = 'l' .. int(e); names[#names + 1] = 'm' .. int(e) end
  local got = redis.call('HMGET', st, unpack(names))
  local count, nano = 0, 0
  for j = 1, #got, 2 do count, nano = count + num(got[j]), nano + num(got[j + 1]) end
  if drop then redis.call('HDEL', st, unpack(names)) end
  return count, nano
end

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

_SETTLE = r"""
-- Settlements of one subject set: codes "window_ms,lease_ms" then per subject
-- ",period_code,leased (0/1)"; groups_arg the settlements summed by lease bucket,
-- "bucket,count,est_nano,nano,excess" joined by ";" (excess: what requests used beyond
-- their estimate, summed); fixes_arg token corrections summed by rate bucket,
-- "bucket,delta" joined by ";". SETTLE runs it alone; RESERVE first, for the
-- settlements that ride along with a reserve call.
local function settle(codes, groups_arg, fixes_arg)
  local a = {}
  for v in string.gmatch(codes, '[^,]+') do a[#a + 1] = tonumber(v) end
  local groups = {}
  for e, c, en, nano, excess in string.gmatch(groups_arg, '(%d+),(%d+),(%d+),(%d+),(%d+)') do
    groups[#groups + 1] = {tonumber(e), tonumber(c), tonumber(en), tonumber(nano), tonumber(excess)}
  end
  local fixes = {}
  for b, d in string.gmatch(fixes_arg, '(%d+),(-?%d+)') do fixes[#fixes + 1] = {tonumber(b), tonumber(d)} end
  for i = 1, #KEYS do
    local st = KEYS[i]
    local pid = period(a[1 + 2 * i])
    local leased = a[2 + 2 * i] == 1
    local f = redis.call('HMGET', st, 'pp', 'ob', 'lw')
    if f[1] ~= pid then redis.call('HSET', st, 'pp', pid, 'sv', '0') end
    local ob = tonumber(f[2]) or 0
    local lw = tonumber(f[3])
    local spent, released, settled, tokens = 0, 0, 0, 0
    for _, g in ipairs(groups) do
      local e, c, en, nano, excess = g[1], g[2], g[3], g[4], g[5]
      if not leased then
        spent = spent + nano
      elseif lw ~= nil and e >= lw then       -- still held: release, and count what was used
        local ln, mn = 'l' .. int(e), 'm' .. int(e)
        local held = redis.call('HMGET', st, ln, mn)
        local hc, hm = num(held[1]), num(held[2])
        c, en = math.min(c, hc), math.min(en, hm)     -- (a Redis restarted empty holds none)
        if hc - c <= 0 then redis.call('HDEL', st, ln, mn)
        else redis.call('HSET', st, ln, int(hc - c), mn, int(hm - en)) end
        released, settled, spent = released + en, settled + c, spent + nano
      else
        -- their leases ran out first and the estimates were charged then: add what exceeds them
        spent = spent + excess
      end
    end
    for _, fx in ipairs(fixes) do
      local b, d = fx[1], fx[2]
      if b >= ob and d ~= 0 then              -- still counted: its bucket takes the actual tokens
        redis.call('HINCRBY', st, 't' .. int(b), int(d))
        tokens = tokens + d
      end
    end
    if released ~= 0 then redis.call('HINCRBY', st, 'rs', int(-released)) end
    if settled ~= 0 then redis.call('HINCRBY', st, 'if', int(-settled)) end
    if spent ~= 0 then redis.call('HINCRBY', st, 'sv', int(spent)) end
    if tokens ~= 0 then redis.call('HINCRBY', st, 'tk', int(tokens)) end
  end
  return #groups
end
"""

RESERVE = _COMMON + _SETTLE + r"""
-- KEYS: per subject (key first, then tenant), its hash
-- ARGV[1], ARGV[2]: window_ms, lease_ms; then per subject five: rpm, tpm, max_parallel,
--   budget_nano, period_code (0: no limit of that kind)
-- ARGV[#ARGV - 3]: the requests in arrival order, "est_tokens,est_nano" joined by ";"
-- ARGV[#ARGV - 2 ..]: settlements of the same subjects that ride along (settle()'s three
--   arguments; empty: none), applied first
-- Answers "now,reset_if_counted_now" then per subject ",requests,reset,tokens,in_flight,
-- spent,reserved,period_end" as they were before the first request (one head), then per
-- request ";1" (admitted) or ";kind,subject,retry_ms"; the caller replays the counters.
local narg = #ARGV
if ARGV[narg - 2] ~= '' then settle(ARGV[narg - 2], ARGV[narg - 1], ARGV[narg]) end
local window, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = math.max(1, math.floor(window / 60))
local lbucket = math.max(1, math.floor(lease / 60))
local cur = math.floor(now / bucket)
local lo = cur - 60
local cl = math.floor(now / lbucket)                -- lease buckets up to cl have run out
local le = math.floor((now + lease) / lbucket) + 1  -- the leases taken now run out at le * lbucket
local nsub = #KEYS
local nb, tb = 'n' .. int(cur), 't' .. int(cur)
local lname, mname = 'l' .. int(le), 'm' .. int(le)

local seen = {}
local head = {int(now), int((cur + 61) * bucket - now)}
for i = 1, nsub do
  local st = KEYS[i]
  local o = 2 + (i - 1) * 5
  local rpm, tpm = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  local par, budget = tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  local pid, pend = period(tonumber(ARGV[o + 5]))
  local leased = par > 0 or budget > 0
  local f = redis.call('HMGET', st, 'n', 'tk', 'ob', 'rs', 'pp', 'sv', 'if', 'lw', 'lh', nb, tb, lname, mname)
  local n, tk, reserved, spent, inflight = num(f[1]), num(f[2]), num(f[4]), num(f[6]), num(f[7])
  -- the numbers as Redis holds them, reused in the answer while they do not change
  -- (formatting a number costs the script more than a command)
  local sn, stk, srs, ssv, sif = f[1] or '0', f[2] or '0', f[4] or '0', f[6] or '0', f[7] or '0'
  local ob = tonumber(f[3]) or cur
  if ob < lo then
    n, tk, ob = trim(st, n, tk, ob, lo, cur)
    sn, stk = int(n), int(tk)
  end
  if f[5] ~= pid then                       -- a new budget period
    spent, ssv = 0, '0'
    redis.call('HSET', st, 'pp', pid, 'sv', '0')
  end
  local lw, lh = tonumber(f[8]), tonumber(f[9])
  if leased and lw ~= nil and lw <= cl then  -- leases that ran out unsettled: their reservation is spent
    local count, nano = run_out(st, lw, lh, cl, true)
    inflight, reserved, spent, lw = inflight - count, reserved - nano, spent + nano, cl + 1
    sif, srs, ssv = int(inflight), int(reserved), int(spent)
    redis.call('HSET', st, 'if', sif, 'rs', srs, 'sv', ssv, 'lw', int(lw))
  end
  seen[i] = {st = st, rpm = rpm, tpm = tpm, par = par, budget = budget, pend = pend, leased = leased,
             n = n, ob = ob, tk = tk, inflight = inflight, spent = spent, reserved = reserved,
             nb = num(f[10]), tb = num(f[11]), lc = num(f[12]), lm = num(f[13]), lw = lw, lh = lh, admitted = 0,
             moved = not f[3]}                      -- moved: ob to be written (a nil field is false)
  head[#head + 1] = table.concat({sn, int((ob + 61) * bucket - now), stk, sif, ssv, srs, int(pend)}, ',')
end

local out = {table.concat(head, ',')}
for et, en in string.gmatch(ARGV[narg - 3], '(%d+),(%d+)') do
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
      if s.n == 0 and s.ob ~= cur then s.ob, s.moved = cur, true end
      s.n, s.tk, s.nb, s.tb = s.n + 1, s.tk + est_tok, s.nb + 1, s.tb + est_tok
      s.admitted = s.admitted + 1
      if s.leased then                      -- reservations are held by leases
        s.inflight, s.reserved = s.inflight + 1, s.reserved + est_nano
        s.lc, s.lm = s.lc + 1, s.lm + est_nano
      end
    end
  else
    out[#out + 1] = int(kind) .. ',' .. int(who) .. ',' .. int(retry)
  end
end

for i = 1, nsub do
  local s = seen[i]
  if s.admitted > 0 then
    local w = {'n', int(s.n), 'tk', int(s.tk), nb, int(s.nb), tb, int(s.tb)}
    if s.moved then w[#w + 1] = 'ob'; w[#w + 1] = int(s.ob) end
    if s.leased then
      w[#w + 1] = 'if'; w[#w + 1] = int(s.inflight); w[#w + 1] = 'rs'; w[#w + 1] = int(s.reserved)
      w[#w + 1] = lname; w[#w + 1] = int(s.lc); w[#w + 1] = mname; w[#w + 1] = int(s.lm)
      if s.lw == nil then w[#w + 1] = 'lw'; w[#w + 1] = int(cl + 1) end
      if s.lh == nil or s.lh < le then w[#w + 1] = 'lh'; w[#w + 1] = int(le) end
    end
    redis.call('HSET', s.st, unpack(w))
  end
end
return table.concat(out, ';')
"""

SETTLE = _COMMON + _SETTLE + r"""
-- KEYS: as for RESERVE. ARGV[1], ARGV[2], ARGV[3]: settle()'s codes, groups_arg, fixes_arg.
return settle(ARGV[1], ARGV[2], ARGV[3])
"""

PEEK = _COMMON + r"""
-- ARGV[1]: "window_ms,lease_ms" then per subject ",period_code". Same answer as RESERVE's
-- per subject part, read-only (leases that ran out count as spent, as RESERVE would).
local a = {}
for v in string.gmatch(ARGV[1], '[^,]+') do a[#a + 1] = tonumber(v) end
local bucket = math.max(1, math.floor(a[1] / 60))
local cl = math.floor(now / math.max(1, math.floor(a[2] / 60)))
local cur = math.floor(now / bucket)
local lo = cur - 60
local out = {int(now)}
for i = 1, #KEYS do
  local st = KEYS[i]
  local pid, pend = period(a[2 + i])
  local f = redis.call('HMGET', st, 'pp', 'sv', 'rs', 'if', 'lw', 'lh')
  local spent, reserved, inflight = num(f[2]), num(f[3]), num(f[4])
  if f[1] ~= pid then spent = 0 end
  local count, nano = run_out(st, tonumber(f[5]), tonumber(f[6]), cl, false)
  inflight, reserved, spent = inflight - count, reserved - nano, spent + nano
  local names = {}
  for b = lo, cur do names[#names + 1] = 'n' .. int(b); names[#names + 1] = 't' .. int(b) end
  local got = redis.call('HMGET', st, unpack(names))
  local n, tk, oldest = 0, 0, -1
  for j = 1, #got, 2 do
    local c = num(got[j])
    n, tk = n + c, tk + num(got[j + 1])
    if c > 0 and oldest < 0 then oldest = lo + (j - 1) / 2 end
  end
  local reset = 0
  if oldest >= 0 then reset = (oldest + 61) * bucket - now end
  out[#out + 1] = table.concat({int(n), int(reset), int(tk), int(reset), int(inflight), int(spent),
                                int(reserved), int(pend)}, ',')
end
return table.concat(out, ',')
"""


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()

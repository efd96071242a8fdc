"""The Lua scripts of the Redis backend: the algorithm of gateway.limits.counters, atomically, in one round trip.

Each counter brings two keys (KEYS[2i-1], KEYS[2i]) and one argument, its parameters separated by spaces
(one string packs and parses faster than seven arguments):

    rpm         KEYS: sorted set of admissions (member ticket, score ms), unused
    tpm         KEYS: sorted set of "ticket:tokens" by ms, string holding their sum
    concurrent  KEYS: sorted set of leases (member ticket, score expiry ms), unused
    budget      KEYS: hash {spent, reserved, a:<threshold>}, sorted set of "ticket:micro-usd" by expiry ms

Time is the Redis server's (TIME), so replicas with skewed clocks share one timeline. Every key carries the
same hash tag ({prefix}), so a request's keys live in one slot and the scripts run on Redis Cluster.
Amounts cross into Lua as the strings they were sent as, and are written back with string.format('%d'),
never through Lua's number-to-string conversion (which would turn 1e15 into "1e+15").
"""

COMMON = """
local call, match, format = redis.call, string.match, string.format
local function int(x) return format('%d', x) end
local function amount_of(member) return tonumber(match(member, ':(%-?%d+)$')) or 0 end
"""

# What Redis (7.0) pays, per EVALSHA: each redis.call, each Lua number passed to one (printed with "%.17g",
# slower than int()), and each score in a reply (a double, printed). So the arguments are strings (the ARGV
# strings themselves where they can be), no call is made whose answer is known, and scores are read only
# where the answer needs them. The fields of an argument never hold a space, hence '([^ ]+)' (faster than %S+).

# ARGV: ticket, then per counter "kind limit amount window_ms expire_at_ms enforce(1/0) keep_ms".
# Returns {ok, refused index (1-based, 0 none), retry_ms, {used, reset_ms}..., over indexes...}.
ADMIT = (
    COMMON
    + """
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = int(now)
local ticket, n = ARGV[1], #ARGV - 1
local kinds, amounts, windows, expires, keeps, used, empty = {}, {}, {}, {}, {}, {}, {}
local over, refused, retry = {}, 0, 0
for i = 1, n do
  local kind, limit, amount, window, expire_at, enforce, keep =
    match(ARGV[i + 1], '([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)')
  kinds[i], amounts[i], windows[i], keeps[i] = kind, amount, window, keep
  limit, amount, window, expire_at = tonumber(limit), tonumber(amount), tonumber(window), tonumber(expire_at)
  expires[i] = expire_at
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  -- used before this request (purging what has expired)
  local u
  if kind == 'rpm' then
    call('ZREMRANGEBYSCORE', k1, '-inf', int(now - window))
    u = call('ZCARD', k1)
    empty[i] = u == 0  -- then this admission, at `now`, will be the oldest entry (nothing here adds earlier)
  elseif kind == 'tpm' then
    local old = call('ZRANGEBYSCORE', k1, '-inf', int(now - window))
    if #old > 0 then
      local freed = 0
      for _, m in ipairs(old) do freed = freed + amount_of(m) end
      call('ZREMRANGEBYRANK', k1, '0', int(#old - 1))  -- the entries just read: the first ranks
      u = call('DECRBY', k2, int(freed))
    else
      local sum = call('GET', k2)
      if sum then
        u = tonumber(sum)
      else
        u = 0
        empty[i] = call('ZCARD', k1) == 0
      end
    end
  elseif kind == 'concurrent' then
    call('ZREMRANGEBYSCORE', k1, '-inf', now_s)
    u = call('ZCARD', k1)
  else
    local expired = call('ZCOUNT', k2, '-inf', now_s)  -- mostly none: cheaper than listing them
    if expired > 0 then
      local freed = 0
      for _, m in ipairs(call('ZRANGE', k2, '0', int(expired - 1))) do freed = freed + amount_of(m) end
      call('ZREMRANGEBYRANK', k2, '0', int(expired - 1))
      call('HINCRBY', k1, 'reserved', int(-freed))
    end
    local v = call('HMGET', k1, 'spent', 'reserved')
    u = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  end
  used[i] = u
  if u + amount > limit then
    over[#over + 1] = i
    if enforce == '1' and refused == 0 then
      refused = i
      if kind == 'budget' then
        retry = math.max(0, expire_at - now)
      elseif kind == 'concurrent' then
        retry = 1000
      elseif amount > limit then
        retry = -1
      elseif kind == 'rpm' then
        -- room once the `need` oldest admissions have left the window: read the need-th alone
        local need = math.max(1, math.ceil(u + amount - limit))
        local e = call('ZRANGE', k1, int(need - 1), int(need - 1), 'WITHSCORES')
        retry = e[2] and tonumber(e[2]) + window - now or window
      else
        -- room once enough of the oldest tokens have left: read from the oldest, in growing slices
        retry = window
        local freed, from, size = 0, 0, 16
        while true do
          local e = call('ZRANGE', k1, int(from), int(from + size - 1), 'WITHSCORES')
          for j = 1, #e, 2 do
            freed = freed + amount_of(e[j])
            if u - freed + amount <= limit then
              retry = tonumber(e[j + 1]) + window - now
              from = -1
              break
            end
          end
          if from < 0 or #e < 2 * size then break end
          from, size = from + size, math.min(size * 4, 1024)
        end
      end
    end
  end
end
local out = {refused == 0 and 1 or 0, refused, retry}
for i = 1, n do
  local kind, u, reset = kinds[i], used[i], retry
  if refused == 0 then
    local k1, k2, window, amount = KEYS[2 * i - 1], KEYS[2 * i], windows[i], amounts[i]
    if kind == 'rpm' then
      call('ZADD', k1, now_s, ticket)
      call('PEXPIRE', k1, window)
      u = u + 1
      reset = tonumber(window)
      if not empty[i] then
        reset = tonumber(call('ZRANGE', k1, '0', '0', 'WITHSCORES')[2]) + reset - now
      end
    elseif kind == 'tpm' then
      call('ZADD', k1, now_s, ticket .. ':' .. amount)
      call('INCRBY', k2, amount)
      call('PEXPIRE', k1, window)
      call('PEXPIRE', k2, window)
      u = u + tonumber(amount)
      reset = tonumber(window)
      if not empty[i] then
        reset = tonumber(call('ZRANGE', k1, '0', '0', 'WITHSCORES')[2]) + reset - now
      end
    elseif kind == 'concurrent' then
      call('ZADD', k1, int(now + tonumber(window)), ticket)
      call('PEXPIRE', k1, window)
      u = u + 1
      reset = 0
    else
      local expire_at = expires[i]
      local until_s = int(expire_at + tonumber(keeps[i]))
      call('ZADD', k2, int(now + tonumber(window)), ticket .. ':' .. amount)
      call('HINCRBY', k1, 'reserved', amount)
      call('PEXPIREAT', k1, until_s)
      call('PEXPIREAT', k2, until_s)
      u = u + tonumber(amount)
      reset = math.max(0, expire_at - now)
    end
  end
  out[#out + 1] = u
  out[#out + 1] = reset
end
for _, i in ipairs(over) do out[#out + 1] = i end
return out
"""
)

# ARGV: ticket, retry (1/0), then per counter "kind reserved actual expire_at_ms keep_ms thresholds" (thresholds
# "a,b", or "-" for none). Returns {index, threshold, spent}... for each soft threshold this settlement crossed first.
# It needs no clock (no TIME).
SETTLE = (
    COMMON
    + """
local ticket, retry, n = ARGV[1], ARGV[2] == '1', #ARGV - 2
local out = {}
for i = 1, n do
  local kind, reserved, actual, expire_at, keep, thresholds =
    match(ARGV[i + 2], '([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)')
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  if kind == 'concurrent' then
    call('ZREM', k1, ticket)
  elseif kind == 'tpm' then
    -- the new entry goes in before the old one leaves: a log left empty for a moment would be deleted,
    -- and come back without its expiry
    if actual ~= reserved then
      local old = ticket .. ':' .. reserved
      local score = call('ZSCORE', k1, old)
      if score then
        call('ZADD', k1, score, ticket .. ':' .. actual)
        call('ZREM', k1, old)
        call('INCRBY', k2, int(tonumber(actual) - tonumber(reserved)))
      end
    end
  elseif kind == 'budget' then
    local removed = call('ZREM', k2, ticket .. ':' .. reserved)
    if removed == 1 then
      call('HINCRBY', k1, 'reserved', int(-tonumber(reserved)))
    end
    if removed == 1 or not retry then
      local spent = call('HINCRBY', k1, 'spent', actual)
      call('PEXPIREAT', k1, int(tonumber(expire_at) + tonumber(keep)))
      if thresholds ~= '-' then
        for threshold in string.gmatch(thresholds, '%d+') do
          if spent >= tonumber(threshold) and call('HSETNX', k1, 'a:' .. threshold, '1') == 1 then
            out[#out + 1] = i
            out[#out + 1] = tonumber(threshold)
            out[#out + 1] = spent
          end
        end
      end
    end
  end
end
return out
"""
)

# ARGV: per counter "kind window_ms expire_at_ms". Returns {used, reset_ms} per counter; writes nothing.
PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #ARGV
local out = {}
for i = 1, n do
  local kind, window, expire_at = string.match(ARGV[i], '(%S+) (%S+) (%S+)')
  window, expire_at = tonumber(window), tonumber(expire_at)
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  local used, reset = 0, 0
  if kind == 'rpm' or kind == 'tpm' then
    local entries = redis.call('ZRANGEBYSCORE', k1, '(' .. (now - window), '+inf', 'WITHSCORES')
    for j = 1, #entries, 2 do
      if kind == 'tpm' then
        used = used + (tonumber(string.match(entries[j], ':(%-?%d+)$')) or 0)
      else
        used = used + 1
      end
      reset = tonumber(entries[j + 1]) + window - now
    end
  elseif kind == 'concurrent' then
    used = redis.call('ZCOUNT', k1, '(' .. now, '+inf')
  else
    local v = redis.call('HMGET', k1, 'spent', 'reserved')
    used = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    reset = math.max(0, expire_at - now)
  end
  table.insert(out, used)
  table.insert(out, reset)
end
return out
"""

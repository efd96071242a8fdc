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
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format('%d', x) end
local function amount_of(member) return tonumber(string.match(member, ':(%-?%d+)$')) or 0 end
local function purge_log(z, sum, upto)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', upto)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + amount_of(m) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', upto)
    redis.call('DECRBY', sum, int(freed))
  end
end
local function purge_reservations(h, z)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + amount_of(m) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    redis.call('HINCRBY', h, 'reserved', int(-freed))
  end
end
-- used before this request, for counter i (purging what has expired)
local function used_of(kind, k1, k2, window)
  if kind == 'rpm' then
    redis.call('ZREMRANGEBYSCORE', k1, '-inf', now - window)
    return redis.call('ZCARD', k1)
  elseif kind == 'tpm' then
    purge_log(k1, k2, now - window)
    return tonumber(redis.call('GET', k2) or '0')
  elseif kind == 'concurrent' then
    redis.call('ZREMRANGEBYSCORE', k1, '-inf', now)
    return redis.call('ZCARD', k1)
  else
    purge_reservations(k1, k2)
    local v = redis.call('HMGET', k1, 'spent', 'reserved')
    return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  end
end
"""

# ARGV: ticket, then per counter "kind limit amount window_ms expire_at_ms enforce(1/0) keep_ms".
# Returns {ok, refused index (1-based, 0 none), retry_ms, {used, reset_ms}..., over indexes...}.
ADMIT = (
    COMMON
    + """
local ticket, n = ARGV[1], #ARGV - 1
local used, room, over, spec = {}, {}, {}, {}
local refused, retry = 0, 0
for i = 1, n do
  spec[i] = {string.match(ARGV[i + 1], '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)')}
  local s = spec[i]
  local kind, limit, amount = s[1], tonumber(s[2]), tonumber(s[3])
  local window, expire_at, enforce = tonumber(s[4]), tonumber(s[5]), s[6] == '1'
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  used[i] = used_of(kind, k1, k2, window)
  room[i] = used[i] + amount <= limit
  if not room[i] then
    table.insert(over, i)
    if enforce and refused == 0 then
      refused = i
      if kind == 'budget' then
        retry = math.max(0, expire_at - now)
      elseif kind == 'concurrent' then
        retry = 1000
      elseif amount > limit then
        retry = -1
      else
        local entries = redis.call('ZRANGE', k1, 0, -1, 'WITHSCORES')
        local freed = 0
        retry = window
        for j = 1, #entries, 2 do
          freed = freed + (kind == 'tpm' and amount_of(entries[j]) or 1)
          if used[i] - freed + amount <= limit then
            retry = tonumber(entries[j + 1]) + window - now
            break
          end
        end
      end
    end
  end
end
local out = {refused == 0 and 1 or 0, refused, retry}
for i = 1, n do
  local s = spec[i]
  local kind, amount_s, window = s[1], s[3], tonumber(s[4])
  local expire_at, keep = tonumber(s[5]), tonumber(s[7])
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  local reset = retry
  if refused == 0 then
    if kind == 'rpm' then
      redis.call('ZADD', k1, now, ticket)
      redis.call('PEXPIRE', k1, window)
      used[i] = used[i] + 1
      local first = redis.call('ZRANGE', k1, 0, 0, 'WITHSCORES')
      reset = tonumber(first[2]) + window - now
    elseif kind == 'tpm' then
      redis.call('ZADD', k1, now, ticket .. ':' .. amount_s)
      redis.call('INCRBY', k2, amount_s)
      redis.call('PEXPIRE', k1, window)
      redis.call('PEXPIRE', k2, window)
      used[i] = used[i] + tonumber(amount_s)
      local first = redis.call('ZRANGE', k1, 0, 0, 'WITHSCORES')
      reset = tonumber(first[2]) + window - now
    elseif kind == 'concurrent' then
      redis.call('ZADD', k1, now + window, ticket)
      redis.call('PEXPIRE', k1, window)
      used[i] = used[i] + 1
      reset = 0
    else
      redis.call('ZADD', k2, now + window, ticket .. ':' .. amount_s)
      redis.call('HINCRBY', k1, 'reserved', amount_s)
      redis.call('PEXPIREAT', k1, expire_at + keep)
      redis.call('PEXPIREAT', k2, expire_at + keep)
      used[i] = used[i] + tonumber(amount_s)
      reset = math.max(0, expire_at - now)
    end
  end
  table.insert(out, used[i])
  table.insert(out, reset)
end
for _, i in ipairs(over) do table.insert(out, i) end
return out
"""
)

# ARGV: ticket, retry (1/0), then per counter "kind reserved actual expire_at_ms keep_ms thresholds" (thresholds
# "a,b", or "-" for none). Returns {index, threshold, spent}... for each soft threshold this settlement crossed first.
SETTLE = (
    COMMON
    + """
local ticket, retry, n = ARGV[1], ARGV[2] == '1', #ARGV - 2
local out = {}
for i = 1, n do
  local kind, reserved, actual, expire_at, keep, thresholds =
    string.match(ARGV[i + 2], '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)')
  expire_at, keep = tonumber(expire_at), tonumber(keep)
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  if kind == 'concurrent' then
    redis.call('ZREM', k1, ticket)
  elseif kind == 'tpm' then
    local old = ticket .. ':' .. reserved
    local score = redis.call('ZSCORE', k1, old)
    if score then
      redis.call('ZREM', k1, old)
      redis.call('ZADD', k1, score, ticket .. ':' .. actual)
      redis.call('INCRBY', k2, int(tonumber(actual) - tonumber(reserved)))
    end
  elseif kind == 'budget' then
    local removed = redis.call('ZREM', k2, ticket .. ':' .. reserved)
    if removed == 1 then
      redis.call('HINCRBY', k1, 'reserved', int(-tonumber(reserved)))
    end
    if removed == 1 or not retry then
      local spent = redis.call('HINCRBY', k1, 'spent', actual)
      redis.call('PEXPIREAT', k1, expire_at + keep)
      for threshold in string.gmatch(thresholds, '%d+') do
        if spent >= tonumber(threshold) and redis.call('HSETNX', k1, 'a:' .. threshold, '1') == 1 then
          table.insert(out, i)
          table.insert(out, tonumber(threshold))
          table.insert(out, spent)
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

-- Shared prelude: router.redis_store prepends this file to every script before loading it.
-- Conventions: every key is declared in KEYS and carries the tenant hash tag (single slot);
-- outcomes are returned as {status, ...} arrays, never raised as script errors.

-- ARGV[1] of every writing script: epoch ms from the store's override clock, or '' to take
-- Redis server time (allowed in scripts since Redis 5: effects replication).
local function now_ms(arg)
  local n = tonumber(arg)
  if n then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Full precision for the performance sums (tostring would keep only 14 digits).
local function fmt(x)
  return string.format('%.17g', x)
end

local function emit(events_key, maxlen, kind, ts, call_id, agent_id, data)
  local args = {events_key, 'MAXLEN', '~', maxlen, '*',
                'type', kind, 'ts', ts, 'call_id', call_id, 'agent_id', agent_id}
  for i = 1, #data do args[#args + 1] = data[i] end
  return redis.call('XADD', unpack(args))
end

local function has_active(agent_key)
  for _, f in ipairs(redis.call('HKEYS', agent_key)) do
    if string.sub(f, 1, 2) == 'a:' then return true end
  end
  return false
end

-- The agent as the store returns it: its hash and the work spans of the retention window.
local function agent_view(agent_key, work_key, now, retention_ms)
  return {redis.call('HGETALL', agent_key),
          redis.call('ZRANGEBYSCORE', work_key, now - retention_ms, '+inf')}
end

-- End an ACTIVE assignment as `state` (completed|released|cancelled): free the agent's slot,
-- record the work span, fold the outcome (scoring.performance.fold, same operations in the
-- same order), update the call if it still points here, keep both records for record_ttl_ms,
-- append the event. o = {now, outcome ('' for none), half_life_s, retention_ms,
-- record_ttl_ms, maxlen}.
local function end_assignment(asg_key, agent_key, work_key, call_key, events_key, asg_id,
                              state, o)
  local now = o.now
  local a = redis.call('HMGET', asg_key, 'agent_id', 'call_id', 'units', 'created', 'token')
  if redis.call('EXISTS', agent_key) == 1 then
    redis.call('HDEL', agent_key, 'a:' .. asg_id)
    redis.call('ZADD', work_key, now, asg_id .. '|' .. a[4] .. '|' .. now .. '|' .. a[3])
    redis.call('ZREMRANGEBYSCORE', work_key, '-inf', '(' .. (now - o.retention_ms))
    redis.call('HINCRBY', agent_key, 'seq', 1)
    if not has_active(agent_key) then redis.call('HSET', agent_key, 'last_free', now) end
    local value = tonumber(o.outcome)
    if value then
      local p = redis.call('HMGET', agent_key, 'perf_sum', 'perf_weight', 'perf_ts')
      local s, w, ts = tonumber(p[1]) or 0, tonumber(p[2]) or 0, tonumber(p[3]) or 0
      local factor = 1.0
      if ts ~= 0 and o.half_life_s > 0 then
        factor = 2.0 ^ (-(now - ts) / 1000 / o.half_life_s)
      end
      redis.call('HSET', agent_key, 'perf_sum', fmt(s * factor + value),
                 'perf_weight', fmt(w * factor + 1.0), 'perf_ts', now)
    end
  end
  redis.call('HSET', asg_key, 'state', state, 'ended', now)
  redis.call('PEXPIRE', asg_key, o.record_ttl_ms)
  if redis.call('HGET', call_key, 'assignment_id') == asg_id then
    redis.call('HSET', call_key, 'status', state, 'updated', now)
    redis.call('PEXPIRE', call_key, o.record_ttl_ms)
  end
  emit(events_key, o.maxlen, string.upper(state), now, a[2], a[1],
       {'assignment_id', asg_id, 'token', a[5]})
end

local function ending_options(now, outcome, half_life_s, retention_ms, record_ttl_ms, maxlen)
  return {now = now, outcome = outcome, half_life_s = tonumber(half_life_s),
          retention_ms = tonumber(retention_ms), record_ttl_ms = tonumber(record_ttl_ms),
          maxlen = maxlen}
end

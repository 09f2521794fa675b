-- Re-check a claim and apply it, or change nothing.
-- KEYS: 1 req, 2 call, 3 agent, 4 work, 5 asg (new id), 6 fence, 7 events, 8 queue, 9 offers,
--       10 history, 11 timeline, 12 idx:ready, 13 idx:revs, 14 policy, 15 queue:waits
-- ARGV: 1 now|'', 2 request_id ('' = none), 3 fingerprint, 4 call_id, 5 agent_id,
--       6 expected seq, 7 units, 8 heartbeat timeout ms (0 = off), 9 assignment id,
--       10 call JSON, 11 explanation JSON, 12 channel, 13 request TTL ms, 14 maxlen,
--       15 from_queue '1'|'0', 16 offer timeout ms (0 = assign directly), 17 age origin
--       (enqueued_ms or created_ms, 0 = unknown), 18 priority, 19 excluded agents JSON,
--       20 enqueued_ms, 21 retention_ms, 22 expected profile version, 23 capacity
--       (items on the channel; 0 = strict mode: the agent's seq must be unchanged),
--       24 occupancy window ms of the caller's agent cache (-1 = none), 25 the policy version
--       the decision read (0 = none stored; -1 = not compared), 26 the latest time the commit
--       may happen at (0 = no bound: eligibility.eligible_until_ms)
-- -> {'replayed'} | {'fingerprint'} | {'exists', status, assignment id} | {'missing'}
--    | {'gone', status} | {'conflict', reason} (also a queued call's excluded agent)
--    | {'ok', token, now, offer expiry, {agent hash, work spans in the window} or {}}
local now = now_ms()
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[3] then return {'replayed'} end
  return {'fingerprint'}
end
local c = redis.call('HMGET', KEYS[2], 'status', 'assignment_id', 'excluded')
local from_queue = ARGV[15] == '1'
if from_queue then
  if not c[1] then return {'missing'} end
  if c[1] ~= 'queued' then return {'gone', c[1]} end
  -- Never back to an agent the call left since the caller read the queue.
  for _, gone in ipairs(cjson.decode(c[3] or '[]')) do
    if gone == ARGV[5] then return {'conflict', 'agent excluded'} end
  end
elseif c[1] then
  return {'exists', c[1], c[2] or ''}
end
local policy_read = tonumber(ARGV[25])
if policy_read >= 0 then  -- the claim's capacity, units and offer time-out come from it
  local stored = redis.call('GET', KEYS[14])  -- compact JSON: its one "version" key
  local version = stored and tonumber(string.match(stored, '"version":(%d+)')) or 0
  if version ~= policy_read then return {'conflict', 'policy changed'} end
end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'conflict', 'agent deleted'} end
local a = redis.call('HMGET', KEYS[3], 'seq', 'presence', 'heartbeat', 'version')
local cap = tonumber(ARGV[23])
if cap > 0 then
  if tonumber(a[4]) ~= tonumber(ARGV[22]) then return {'conflict', 'agent profile changed'} end
elseif tonumber(a[1]) ~= tonumber(ARGV[6]) then
  return {'conflict', 'agent changed'}
end
if a[2] ~= 'available' then return {'conflict', 'agent is ' .. a[2]} end
local timeout = tonumber(ARGV[8])
if timeout > 0 and now - tonumber(a[3]) > timeout then
  return {'conflict', 'heartbeat expired'}
end
local latest = tonumber(ARGV[26])
if latest > 0 and now > latest then return {'conflict', 'agent leaving'} end
if cap > 0 then
  local items, units = 0, 0
  local flat = redis.call('HGETALL', KEYS[3])
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'a:' then
      local w = parse_work(flat[i + 1])
      if w.wrap == 0 or w.wrap > now then
        units = units + tonumber(w.units)
        if w.channel == ARGV[12] then items = items + 1 end
      end
    end
  end
  if items >= cap or units + tonumber(ARGV[7]) > 100 then return {'conflict', 'agent full'} end
end

local asg_id, channel = ARGV[9], ARGV[12]
local offer_ms = tonumber(ARGV[16])
local state, status, offered, expires = 'active', 'assigned', '0', 0
if offer_ms > 0 then state, status, offered, expires = 'offered', 'offered', '1', now + offer_ms end
local token = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[5], 'call_id', ARGV[4], 'agent_id', ARGV[5], 'channel', channel,
           'units', ARGV[7], 'token', token, 'state', state, 'created', int(now), 'ended', 0,
           'explanation', ARGV[11], 'offer_expires', int(expires))
sweep(KEYS[3], KEYS[4], now, tonumber(ARGV[21]))
redis.call('HSET', KEYS[3], 'a:' .. asg_id, work_value(channel, ARGV[7], now, offered, 0),
           'last_assigned', int(now))
redis.call('HINCRBY', KEYS[3], 'seq', 1)
index_agent(KEYS[3], KEYS[12], KEYS[13], ARGV[5])
if from_queue then
  redis.call('ZREM', KEYS[8], ARGV[4])
  remove_wait(KEYS[15], KEYS[2], ARGV[4])
  redis.call('HSET', KEYS[2], 'status', status, 'assignment_id', asg_id, 'updated', int(now))
else
  local origin = tonumber(ARGV[17])
  if origin == 0 then origin = now end
  NEW_TIMELINE[KEYS[11]] = true
  redis.call('HSET', KEYS[2], 'call', ARGV[10], 'channel', channel, 'status', status,
             'assignment_id', asg_id, 'updated', int(now), 'origin', int(origin),
             'enqueued', ARGV[20], 'priority', ARGV[18], 'excluded', ARGV[19],
             'callback', '0', 'at_risk', '0', 'breached', '0')
  remember_trace(KEYS[2])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[3], 'call_id', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[13])
end
if offer_ms > 0 then
  redis.call('ZADD', KEYS[9], expires, asg_id)
  emit_call(KEYS[7], KEYS[11], ARGV[14], 'OFFERED', now, ARGV[4], ARGV[5],
            {'assignment_id', asg_id, 'token', tostring(token), 'expires_ms', int(expires)})
else
  local id = emit_call(KEYS[7], KEYS[11], ARGV[14], 'ASSIGNED', now, ARGV[4], ARGV[5],
                       {'assignment_id', asg_id, 'token', tostring(token)})
  local origin = tonumber(redis.call('HGET', KEYS[2], 'origin'))
  add_history(KEYS[10], id, 'answered', channel, now, math.max(0, now - origin), ARGV[4])
end
settle_call(KEYS[2], KEYS[11], false, 0)
return {'ok', token, int(now), int(expires), agent_after(KEYS[3], KEYS[4], now, tonumber(ARGV[24]))}

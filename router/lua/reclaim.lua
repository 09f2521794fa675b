-- Take back an absent agent's offers and their active work on some channels.
-- KEYS: 1 agent, 2 work, 3 events, 4 queue, 5 offers, 6 idx:ready, 7 idx:revs, 8 queue:waits,
--       then per assignment read: asg, call, timeline
-- ARGV: 1 now|'', 2 agent_id, 3 channels as ',a,b,', 4 aging ms per priority level,
--       5 retention_ms, 6 record_ttl_ms, 7 maxlen, 8 seq and 9 heartbeat the caller saw the
--       agent gone at ('' = take back whatever qualifies), 10.. the assignment ids read
-- -> {'missing'} | {'changed'} (the agent changed since: maybe back) | {'ok', {{assignment
--    id, asg}, ...}}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[8] ~= '' then
  local a = redis.call('HMGET', KEYS[1], 'seq', 'heartbeat')
  if tonumber(a[1]) ~= tonumber(ARGV[8]) or tonumber(a[2] or 0) ~= tonumber(ARGV[9]) then
    return {'changed'}
  end
end
local agent_id, channels, aging_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local taken = {}
for i = 10, #ARGV do
  local asg_id, base = ARGV[i], 8 + (i - 10) * 3
  local asg_key = KEYS[base + 1]
  local k = {call = KEYS[base + 2], events = KEYS[3], queue = KEYS[4], timeline = KEYS[base + 3],
             waits = KEYS[8]}
  local h = redis.call('HMGET', asg_key, 'state', 'agent_id', 'channel', 'call_id', 'token')
  local wanted = h[1] == 'offered'
      or (h[1] == 'active' and string.find(channels, ',' .. tostring(h[3]) .. ',', 1, true))
  if wanted and h[2] == agent_id
     and redis.call('HEXISTS', KEYS[1], 'a:' .. asg_id) == 1 then
    continue_call_trace(k.call)
    end_assignment(asg_key, nil, asg_id, 'reclaimed', now, ARGV[6])
    free_slot(KEYS[1], KEYS[2], asg_key, asg_id, now, tonumber(ARGV[5]))
    emit_call(k.events, k.timeline, ARGV[7], 'RECLAIMED', now, h[4], agent_id,
              {'assignment_id', asg_id, 'token', h[5]})
    if redis.call('HGET', k.call, 'assignment_id') == asg_id then
      requeue(k, h[4], agent_id, now, aging_ms, ARGV[7], h[1] == 'active')
    end
    settle_call(k.call, k.timeline, false, 0)
    taken[#taken + 1] = {asg_id, redis.call('HGETALL', asg_key)}
  end
end
if #taken > 0 then
  -- Off the offers in one command, after the loop: one per assignment could empty the key
  -- and fail on it the next time round (see _lib.lua).
  local ids = {}
  for j, t in ipairs(taken) do ids[j] = t[1] end
  redis.call('ZREM', KEYS[5], unpack(ids))
  index_agent(KEYS[1], KEYS[6], KEYS[7], agent_id)
end
return {'ok', taken}

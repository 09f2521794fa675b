-- The customer hung up or the platform withdrew the call.
-- KEYS: 1 call, 2 asg (the call's assignment as read), 3 agent, 4 work, 5 events, 6 queue,
--       7 offers, 8 history, 9 timeline, 10 idx:ready, 11 idx:revs, 12 queue:waits
-- ARGV: 1 now|'', 2 assignment id read, 3 retention_ms, 4 record_ttl_ms, 5 maxlen, 6 call_id
-- -> {'missing'} | {'retry'} (the call moved on since the read) | {'completed'}
--    | {'ok', call hash, asg hash, ms the call waited if this abandoned it, else -1}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local c = redis.call('HMGET', KEYS[1], 'status', 'assignment_id', 'origin', 'channel')
if (c[2] or '') ~= ARGV[2] then return {'retry'} end
if c[1] == 'completed' then return {'completed'} end
local asg_id, call_id, abandoned_after = ARGV[2], ARGV[6], -1
local a = redis.call('HMGET', KEYS[2], 'state', 'agent_id', 'token')
local function end_work()
  end_assignment(KEYS[2], KEYS[7], asg_id, 'cancelled', now, ARGV[4])
  free_slot(KEYS[3], KEYS[4], KEYS[2], asg_id, now, tonumber(ARGV[3]))
  index_agent(KEYS[3], KEYS[10], KEYS[11], a[2])
  return a[2], {'assignment_id', asg_id, 'token', a[3]}
end
if c[1] == 'queued' or c[1] == 'offered' then
  local agent_id, data = '', {}
  if c[1] == 'offered' and a[1] == 'offered' then agent_id, data = end_work() end
  redis.call('ZREM', KEYS[6], call_id)
  remove_wait(KEYS[12], KEYS[1], call_id)
  redis.call('HSET', KEYS[1], 'status', 'abandoned', 'updated', int(now))
  local id = emit_call(KEYS[5], KEYS[9], ARGV[5], 'ABANDONED', now, call_id, agent_id, data)
  abandoned_after = math.max(0, now - tonumber(c[3]))
  add_history(KEYS[8], id, 'abandoned', c[4], now, abandoned_after, call_id)
  settle_call(KEYS[1], KEYS[9], true, ARGV[4])
elseif c[1] == 'assigned' and a[1] == 'active' then
  local agent_id, data = end_work()
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', int(now))
  emit_call(KEYS[5], KEYS[9], ARGV[5], 'CANCELLED', now, call_id, agent_id, data)
  settle_call(KEYS[1], KEYS[9], true, ARGV[4])
end
return {'ok', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), abandoned_after}

-- OFFERED -> REJECTED or TIMED_OUT: free the slot, requeue the call, count a missed offer.
-- KEYS: 1 asg, 2 agent, 3 work, 4 call, 5 events, 6 offers, 7 queue, 8 timeline, 9 idx:ready,
--       10 idx:revs, 11 queue:waits
-- ARGV: 1 now|'', 2 assignment id, 3 token, 4 'rejected'|'timed_out', 5 aging ms per
--       priority level, 6 max missed offers (0 = never NOT_RESPONDING), 7 retention_ms,
--       8 record_ttl_ms, 9 maxlen, 10 '1' count a time-out as a missed offer | '0' not
-- -> {'missing'} | {'stale'} | {'unchanged', asg} | {'already', state} | {'expired'}
--    | {'ok', asg}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'offer_expires', 'call_id', 'agent_id')
if h[1] ~= ARGV[3] then return {'stale'} end
local state = ARGV[4]
if h[2] == state then return {'unchanged', redis.call('HGETALL', KEYS[1])} end
if h[2] ~= 'offered' then return {'already', h[2]} end
if state == 'rejected' and now >= tonumber(h[3]) then return {'expired'} end
local asg_id, call_id, agent_id = ARGV[2], h[4], h[5]
local k = {call = KEYS[4], events = KEYS[5], queue = KEYS[7], timeline = KEYS[8],
           waits = KEYS[11]}
if state == 'timed_out' then continue_call_trace(k.call) end  -- the dispatcher's work
end_assignment(KEYS[1], KEYS[6], asg_id, state, now, ARGV[8])
free_slot(KEYS[2], KEYS[3], KEYS[1], asg_id, now, tonumber(ARGV[7]))
local kind = 'REJECTED'
if state == 'timed_out' then kind = 'OFFER_TIMED_OUT' end
emit_call(k.events, k.timeline, ARGV[9], kind, now, call_id, agent_id,
          {'assignment_id', asg_id, 'token', h[1]})
if redis.call('HGET', k.call, 'assignment_id') == asg_id then
  requeue(k, call_id, agent_id, now, tonumber(ARGV[5]), ARGV[9], false)
end
settle_call(k.call, k.timeline, false, 0)
if state == 'timed_out' and ARGV[10] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  local missed = redis.call('HINCRBY', KEYS[2], 'missed', 1)
  local limit = tonumber(ARGV[6])
  if limit > 0 and missed >= limit
     and redis.call('HGET', KEYS[2], 'presence') == 'available' then
    local reason = 'missed ' .. missed .. ' offers'
    redis.call('HSET', KEYS[2], 'presence', 'not_responding', 'presence_reason', reason,
               'presence_since', int(now))
    redis.call('HINCRBY', KEYS[2], 'seq', 1)
    emit(k.events, ARGV[9], 'PRESENCE_CHANGED', now, '', agent_id,
         {'presence', 'not_responding', 'reason', reason})
  end
end
index_agent(KEYS[2], KEYS[9], KEYS[10], agent_id)
return {'ok', redis.call('HGETALL', KEYS[1])}

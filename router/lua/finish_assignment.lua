-- End an ACTIVE assignment as completed, released or cancelled.
-- KEYS: 1 asg, 2 agent, 3 work, 4 call, 5 events, 6 queue, 7 offers, 8 history, 9 timeline,
--       10 idx:ready, 11 idx:revs, 12 policy, 13 queue:waits, 14 done:since, 15.. done:<channel>
--       of every channel
--       (agent and call as read from the asg hash, which never changes them)
-- ARGV: 1 now|'', 2 assignment id, 3 token, 4 end state, 5 outcome value or '',
--       6 half_life_s, 7 retention_ms, 8 record_ttl_ms, 9 maxlen, 10 wrap-up ms,
--       11 aging ms per priority level, 12 occupancy window ms of the caller's agent cache
--       (-1 = none), 13 SHA-1 of the policy JSON the caller read ('' = no check),
--       14.. (channel, outcome value or '', wrap-up ms) triples: the assignment's channel's
--       replace ARGV 5 and 10
-- -> {'missing'} | {'stale'} | {'already', state} | {'offered'} | {'policy'}
--    | {'unchanged', asg, calls queued}
--    | {'ok', asg, now, {agent hash, work spans in the window} or {}, calls queued}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'call_id', 'agent_id', 'created',
                     'channel')
if h[1] ~= ARGV[3] then return {'stale'} end
local state = ARGV[4]
if h[2] ~= 'active' then
  if h[2] == state then
    return {'unchanged', redis.call('HGETALL', KEYS[1]), redis.call('ZCARD', KEYS[6])}
  end
  if h[2] == 'offered' then return {'offered'} end
  return {'already', h[2]}
end
if ARGV[13] ~= '' and redis.sha1hex(redis.call('GET', KEYS[12]) or '') ~= ARGV[13] then
  return {'policy'}
end
local asg_id, call_id, agent_id = ARGV[2], h[3], h[4]
local outcome, retention_ms, wrap_ms = ARGV[5], tonumber(ARGV[7]), tonumber(ARGV[10])
for i = 14, #ARGV, 3 do
  if ARGV[i] == h[6] then outcome, wrap_ms = ARGV[i + 1], tonumber(ARGV[i + 2]) end
end
local k = {call = KEYS[4], events = KEYS[5], queue = KEYS[6], timeline = KEYS[9],
           waits = KEYS[13]}
end_assignment(KEYS[1], KEYS[7], asg_id, state, now, ARGV[8])
if state == 'completed' and wrap_ms > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  -- Wrap-up: the slot stays taken until now + wrap-up; its span is recorded when it ends.
  sweep(KEYS[2], KEYS[3], now, retention_ms)
  local field = 'a:' .. asg_id
  local value = redis.call('HGET', KEYS[2], field)
  if value then
    local w = parse_work(value)
    redis.call('HSET', KEYS[2], field, work_value(w.channel, w.units, w.start, '0', now + wrap_ms))
  end
  redis.call('HINCRBY', KEYS[2], 'seq', 1)
  mark_free(KEYS[2], now)
else
  free_slot(KEYS[2], KEYS[3], KEYS[1], asg_id, now, retention_ms)
end
fold(KEYS[2], outcome, tonumber(ARGV[6]), now)
index_agent(KEYS[2], KEYS[10], KEYS[11], agent_id)
local id = emit_call(k.events, k.timeline, ARGV[9], string.upper(state), now, call_id, agent_id,
                     {'assignment_id', asg_id, 'token', h[1]})
if state == 'completed' then
  local done_key, suffix = nil, ':done:' .. h[6]
  for i = 15, #KEYS do
    if string.sub(KEYS[i], -#suffix) == suffix then done_key = KEYS[i] end
  end
  add_history(KEYS[8], id, 'completed', h[6], now, now - tonumber(h[5]), call_id, done_key)
  redis.call('SET', KEYS[14], int(now), 'NX')
end
if redis.call('HGET', k.call, 'assignment_id') == asg_id then
  if state == 'released' then
    requeue(k, call_id, agent_id, now, tonumber(ARGV[11]), ARGV[9], true)
    settle_call(k.call, k.timeline, false, 0)
  else
    redis.call('HSET', k.call, 'status', state, 'updated', int(now))
    settle_call(k.call, k.timeline, true, ARGV[8])
  end
end
return {'ok', redis.call('HGETALL', KEYS[1]), int(now),
        agent_after(KEYS[2], KEYS[3], now, tonumber(ARGV[12])), redis.call('ZCARD', KEYS[6])}

-- OFFERED -> ACTIVE.
-- KEYS: 1 asg, 2 agent, 3 call, 4 events, 5 offers, 6 history, 7 timeline, 8 idx:ready,
--       9 idx:revs, 10 policy  (agent and call as read from the asg hash, which never changes
--       them)
-- ARGV: 1 now|'', 2 assignment id, 3 token, 4 maxlen, 5 heartbeat timeout ms (0 = off),
--       6 SLA targets JSON (ms per channel: store_common.sla_targets_ms), 7 escalation group,
--       8 '1' refuse an agent who left (the dispatcher takes the offer back) | '0' not,
--       9 SHA-1 of the policy JSON ARGV 5-8 come from ('' = no check)
-- -> {'missing'} | {'stale'} | {'unchanged', asg} | {'not_offer'} | {'already', state}
--    | {'expired'} | {'policy'} (the policy is no longer the one ARGV 9 names: nothing
--    written) | {'away', reason} (the agent left: eligibility.left_reason)
--    | {'ok', asg, breached '1'|'0' (the call had waited past its target: flagged now)}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'offer_expires', 'call_id', 'agent_id')
if h[1] ~= ARGV[3] then return {'stale'} end
if h[2] == 'active' then
  if tonumber(h[3]) <= 0 then return {'not_offer'} end  -- assigned directly
  return {'unchanged', redis.call('HGETALL', KEYS[1])}
end
if h[2] ~= 'offered' then return {'already', h[2]} end
if now >= tonumber(h[3]) then return {'expired'} end
if ARGV[9] ~= '' and redis.sha1hex(redis.call('GET', KEYS[10]) or '') ~= ARGV[9] then
  return {'policy'}
end
local a = redis.call('HMGET', KEYS[2], 'presence', 'heartbeat', 'profile')
if a[1] and ARGV[8] == '1' then
  local timeout = tonumber(ARGV[5])
  local profile = cjson.decode(a[3])
  if a[1] ~= 'available' then return {'away', 'agent is ' .. a[1]} end
  if timeout > 0 and now - tonumber(a[2]) > timeout then return {'away', 'heartbeat expired'} end
  for _, absence in ipairs(profile.absences or {}) do
    if absence.start_ms <= now and now < absence.end_ms then
      return {'away', 'agent is on a scheduled absence'}
    end
  end
  local shift_end = tonumber(profile.shift_end_ms) or 0
  if shift_end > 0 and shift_end <= now then return {'away', "agent's shift has ended"} end
end
local asg_id = ARGV[2]
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('ZREM', KEYS[5], asg_id)
local field = 'a:' .. asg_id
local value = redis.call('HGET', KEYS[2], field)
if value then
  local w = parse_work(value)
  redis.call('HSET', KEYS[2], field, work_value(w.channel, w.units, w.start, '0', 0),
             'missed', 0)
  index_agent(KEYS[2], KEYS[8], KEYS[9], h[5])
end
local c = redis.call('HMGET', KEYS[3], 'assignment_id', 'origin', 'channel', 'breached')
local breached = '0'
if c[1] == asg_id then
  local wait = math.max(0, now - tonumber(c[2]))
  local target = tonumber(cjson.decode(ARGV[6])[c[3]] or 0)
  redis.call('HSET', KEYS[3], 'status', 'assigned', 'updated', int(now))
  if target > 0 and wait > target and c[4] ~= '1' then  -- passed while it was offered
    breached = '1'
    redis.call('HSET', KEYS[3], 'breached', '1')
    emit_call(KEYS[4], KEYS[7], ARGV[4], 'SLA_BREACHED', now, h[4], '',
              {'group', ARGV[7], 'channel', c[3]})
  end
  local id = emit_call(KEYS[4], KEYS[7], ARGV[4], 'ACCEPTED', now, h[4], h[5],
                       {'assignment_id', asg_id, 'token', h[1]})
  add_history(KEYS[6], id, 'answered', c[3], now, wait, h[4])
  settle_call(KEYS[3], KEYS[7], false, 0)
end
return {'ok', redis.call('HGETALL', KEYS[1]), breached}

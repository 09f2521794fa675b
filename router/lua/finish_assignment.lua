-- KEYS: 1 asg, 2 agent, 3 work, 4 call, 5 events  (agent and call as read from the asg hash,
--       which never changes them)
-- ARGV: 1 now|'', 2 assignment id, 3 token, 4 end state, 5 outcome value or '',
--       6 half_life_s, 7 retention_ms, 8 record_ttl_ms, 9 maxlen
-- -> {'missing'} | {'stale'} | {'already', state} | {'unchanged', asg} | {'ok', asg}
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local h = redis.call('HMGET', KEYS[1], 'token', 'state')
if h[1] ~= ARGV[3] then return {'stale'} end
if h[2] ~= 'active' then
  if h[2] == ARGV[4] then return {'unchanged', redis.call('HGETALL', KEYS[1])} end
  return {'already', h[2]}
end
end_assignment(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[4],
               ending_options(now, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]))
return {'ok', redis.call('HGETALL', KEYS[1])}

-- Re-check a claim and apply it, or change nothing.
-- KEYS: 1 req, 2 call, 3 agent, 4 asg (new id), 5 fence, 6 events
-- ARGV: 1 now|'', 2 fingerprint, 3 call_id, 4 agent_id, 5 expected seq, 6 units,
--       7 heartbeat timeout ms (0 = off), 8 assignment id, 9 call JSON, 10 explanation JSON,
--       11 channel, 12 request TTL ms, 13 maxlen
-- -> {'replayed', assignment id} | {'fingerprint'} | {'call_assigned', assignment id}
--    | {'call_finished', status} | {'conflict', reason} | {'ok', token, now}
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'fingerprint', 'assignment_id')
  if r[1] == ARGV[2] then return {'replayed', r[2]} end
  return {'fingerprint'}
end
local c = redis.call('HMGET', KEYS[2], 'status', 'assignment_id')
if c[1] == 'assigned' then return {'call_assigned', c[2]} end
if c[1] == 'completed' or c[1] == 'cancelled' then return {'call_finished', c[1]} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'conflict', 'agent deleted'} end
local a = redis.call('HMGET', KEYS[3], 'seq', 'presence', 'heartbeat')
if tonumber(a[1]) ~= tonumber(ARGV[5]) then return {'conflict', 'agent changed'} end
if a[2] ~= 'available' then return {'conflict', 'agent is ' .. a[2]} end
local timeout = tonumber(ARGV[7])
if timeout > 0 and now - tonumber(a[3]) > timeout then
  return {'conflict', 'heartbeat expired'}
end
local token = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[4], 'call_id', ARGV[3], 'agent_id', ARGV[4], 'channel', ARGV[11],
           'units', ARGV[6], 'token', token, 'state', 'active', 'created', now, 'ended', 0,
           'explanation', ARGV[10])
redis.call('HSET', KEYS[3], 'a:' .. ARGV[8], ARGV[11] .. '|' .. ARGV[6] .. '|' .. now,
           'last_assigned', now)
redis.call('HINCRBY', KEYS[3], 'seq', 1)
redis.call('HSET', KEYS[2], 'call', ARGV[9], 'status', 'assigned', 'assignment_id', ARGV[8],
           'updated', now)
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'assignment_id', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[12])
emit(KEYS[6], ARGV[13], 'ASSIGNED', now, ARGV[3], ARGV[4],
     {'assignment_id', ARGV[8], 'token', tostring(token)})
return {'ok', token, now}

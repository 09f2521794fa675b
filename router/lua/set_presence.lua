-- KEYS: 1 agent, 2 work, 3 events, 4 idx:ready, 5 idx:revs
-- ARGV: 1 now|'', 2 presence, 3 reason, 4 agent_id, 5 maxlen, 6 retention_ms
-- -> {'missing'} | {'ok', view}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local previous = redis.call('HGET', KEYS[1], 'presence')
redis.call('HSET', KEYS[1], 'presence', ARGV[2], 'presence_reason', ARGV[3],
           'presence_since', now, 'heartbeat', now)
redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[2] == 'available' then
  redis.call('HSET', KEYS[1], 'missed', 0)
  if previous ~= 'available' and held(KEYS[1], now)[1] == 0 then
    redis.call('HSET', KEYS[1], 'last_free', now)
  end
end
index_agent(KEYS[1], KEYS[4], KEYS[5], ARGV[4])
emit(KEYS[3], ARGV[5], 'PRESENCE_CHANGED', now, '', ARGV[4],
     {'presence', ARGV[2], 'reason', ARGV[3]})
return {'ok', agent_view(KEYS[1], KEYS[2], now, tonumber(ARGV[6]))}

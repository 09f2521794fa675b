-- KEYS: 1 agent, 2 idx:ready, 3 idx:revs    ARGV: 1 now|'', 2 agent_id
-- -> {'missing'} | {'ok', now}
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
redis.call('HSET', KEYS[1], 'heartbeat', now)
index_agent(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return {'ok', now}

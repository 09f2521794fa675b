-- KEYS: 1 agent    ARGV: 1 now|''    -> {'missing'} | {'ok', now}
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
redis.call('HSET', KEYS[1], 'heartbeat', now)
return {'ok', now}

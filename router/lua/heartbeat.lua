-- KEYS: 1 agent, 2 idx:beats, 3 idx:beatlog    ARGV: 1 now|'', 2 agent_id
-- -> {'missing'} | {'ok', now}
-- A heartbeat changes one field, so it takes no new agent rev (every replica would read and
-- decode the agent again): its time goes to idx:beats and its own log, idx:beatlog, whose
-- revs follow next_rev like the agents'; readers patch it into the agents they have cached.
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
redis.call('HSET', KEYS[1], 'heartbeat', now)
local rev = next_rev(KEYS[3])
redis.call('ZADD', KEYS[3], rev, '', rev, ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[2])
return {'ok', now}

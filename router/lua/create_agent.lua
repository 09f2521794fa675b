-- KEYS: 1 agent, 2 work, 3 agents, 4 events, 5 idx:ready, 6 idx:revs,
--       7.. idx:skill:<skill> of the profile
-- ARGV: 1 now|'', 2 agent_id, 3 profile JSON, 4 maxlen, 5 retention_ms
-- -> {'exists'} | {'ok', view}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'profile', ARGV[3], 'version', 1, 'presence', 'offline',
           'presence_reason', '', 'presence_since', now, 'heartbeat', 0, 'seq', 1,
           'last_free', 0, 'last_assigned', 0, 'perf_sum', 0, 'perf_weight', 0, 'perf_ts', 0,
           'missed', 0)
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
for i = 7, #KEYS do redis.call('SADD', KEYS[i], ARGV[2]) end
index_agent(KEYS[1], KEYS[5], KEYS[6], ARGV[2])
emit(KEYS[4], ARGV[4], 'AGENT_CREATED', now, '', ARGV[2], {'version', '1'})
return {'ok', agent_view(KEYS[1], KEYS[2], now, tonumber(ARGV[5]))}

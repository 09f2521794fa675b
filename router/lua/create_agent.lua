-- KEYS: 1 agent, 2 work, 3 agents, 4 events, 5 idx:ready, 6 idx:revs, 7 idx:retired,
--       8.. idx:skill:<skill> of the profile
-- ARGV: 1 now|'', 2 agent_id, 3 profile JSON, 4 maxlen, 5 retention_ms
-- -> {'exists'} | {'ok', view}
-- Version and seq start at 1, or one past those of a deleted agent of the same id.
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local version, seq = 1, 1
local last = redis.call('HGET', KEYS[7], ARGV[2])
if last then
  local bar = string.find(last, '|', 1, true)
  version = tonumber(string.sub(last, 1, bar - 1)) + 1
  seq = tonumber(string.sub(last, bar + 1)) + 1
  redis.call('HDEL', KEYS[7], ARGV[2])
end
redis.call('HSET', KEYS[1], 'profile', ARGV[3], 'version', version, 'presence', 'offline',
           'presence_reason', '', 'presence_since', now, 'heartbeat', 0, 'seq', seq,
           'last_free', 0, 'last_assigned', 0, 'perf_sum', 0, 'perf_weight', 0, 'perf_ts', 0,
           'missed', 0)
delete(KEYS[2])  -- spans of an earlier agent of the id; agent_view then reads none
redis.call('ZADD', KEYS[3], 0, ARGV[2])
for i = 8, #KEYS do redis.call('SADD', KEYS[i], ARGV[2]) end
index_agent(KEYS[1], KEYS[5], KEYS[6], ARGV[2])
emit(KEYS[4], ARGV[4], 'AGENT_CREATED', now, '', ARGV[2], {'version', int(version)})
return {'ok', agent_view(KEYS[1], KEYS[2], now, tonumber(ARGV[5]))}

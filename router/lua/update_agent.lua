-- Compare-and-set of an agent profile on the version the caller read.
-- KEYS: 1 agent, 2 work, 3 events, 4 idx:ready, 5 idx:revs,
--       6.. idx:skill keys: ARGV[4] removed skills, then added ones
-- ARGV: 1 now|'', 2 version read, 3 new profile JSON, 4 number of removed skills, 5 agent_id,
--       6 maxlen, 7 retention_ms
-- -> {'missing'} | {'moved', current version} | {'ok', view}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local version = tonumber(redis.call('HGET', KEYS[1], 'version'))
if version ~= tonumber(ARGV[2]) then return {'moved', version} end
redis.call('HSET', KEYS[1], 'profile', ARGV[3], 'version', version + 1)
redis.call('HINCRBY', KEYS[1], 'seq', 1)
local removed = tonumber(ARGV[4])
for i = 6, #KEYS do
  if i < 6 + removed then
    redis.call('SREM', KEYS[i], ARGV[5])
  else
    redis.call('SADD', KEYS[i], ARGV[5])
  end
end
index_agent(KEYS[1], KEYS[4], KEYS[5], ARGV[5])
emit(KEYS[3], ARGV[6], 'AGENT_UPDATED', now, '', ARGV[5], {'version', tostring(version + 1)})
return {'ok', agent_view(KEYS[1], KEYS[2], now, tonumber(ARGV[7]))}

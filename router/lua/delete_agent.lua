-- KEYS: 1 agent, 2 work, 3 agents, 4 events, 5 idx:ready, 6 idx:revs, 7 idx:beats,
--       8 idx:beatlog, 9 idx:gone, 10 idx:retired, 11.. idx:skill keys of the profile read
-- ARGV: 1 now|'', 2 version read, 3 agent_id, 4 maxlen, 5 tombstones kept (µs of revs)
-- -> {'missing'} | {'moved', current version} | {'busy', count of work held} | {'ok'}
-- (a wrap-up that has ended does not count; its span goes with the work key)
-- The agent leaves the heartbeat index too (readers learn of the deletion from idx:revs),
-- so a full read of it stays as long as the team, not as every agent there ever was.
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local version = tonumber(redis.call('HGET', KEYS[1], 'version'))
if version ~= tonumber(ARGV[2]) then return {'moved', version} end
local active = held(KEYS[1], now)[1]
if active > 0 then return {'busy', active} end
-- Its version and seq go on with the next agent of this id (create_agent.lua).
redis.call('HSET', KEYS[10], ARGV[3],
           int(version) .. '|' .. redis.call('HGET', KEYS[1], 'seq'))
delete(KEYS[1], KEYS[2])  -- index_agent then knows without EXISTS (see _lib.lua)
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[7], ARGV[3])
redis.call('ZREM', KEYS[8], ARGV[3])
for i = 11, #KEYS do redis.call('SREM', KEYS[i], ARGV[3]) end
index_agent(KEYS[1], KEYS[5], KEYS[6], ARGV[3])
bury(KEYS[6], KEYS[9], ARGV[3], tonumber(ARGV[5]))
emit(KEYS[4], ARGV[4], 'AGENT_DELETED', now, '', ARGV[3], {})
return {'ok'}

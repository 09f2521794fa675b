-- Build the routing index (idx:ready, idx:revs) of some agents from their hashes: run over
-- every agent of a tenant whose index was never built by this version, the last batch with
-- ARGV[3] set, which then marks the index as built.
-- KEYS: 1 idx:ready, 2 idx:revs, 3 idx:version, 4.. agent keys
-- ARGV: 1 now|'', 2 index version, 3 '1' on the last batch, 4.. agent ids (as KEYS 4..)
-- -> {'ok'}
-- idx:ready in one ZADD, then one ZREM (it may empty the key: see _lib.lua).
local ready, out = {}, {}  -- the agents are distinct
for i = 4, #KEYS do
  local units = stamp_agent(KEYS[i], KEYS[2], ARGV[i])
  if units then
    ready[#ready + 1] = units
    ready[#ready + 1] = ARGV[i]
  else
    out[#out + 1] = ARGV[i]
  end
end
if #ready > 0 then redis.call('ZADD', KEYS[1], unpack(ready)) end
if #out > 0 then redis.call('ZREM', KEYS[1], unpack(out)) end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[2]) end
return {'ok'}

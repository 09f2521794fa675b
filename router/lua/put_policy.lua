-- Compare-and-set of the policy on the version the caller read.
-- KEYS: 1 policy, 2 events
-- ARGV: 1 now|'', 2 version read, 3 new policy JSON (version read + 1 inside), 4 maxlen
-- -> {'moved', current version} | {'ok'}
local now = now_ms()
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(cjson.decode(current)['version']) or 0 end
if version ~= tonumber(ARGV[2]) then return {'moved', version} end
redis.call('SET', KEYS[1], ARGV[3])
emit(KEYS[2], ARGV[4], 'POLICY_UPDATED', now, '', '', {'version', tostring(version + 1)})
return {'ok'}

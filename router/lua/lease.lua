-- The dispatcher lease: '<expires_ms>|<owner>', compared with store time (so it also works
-- under the override clock); on Redis time the key also carries a PX TTL.
-- KEYS: 1 lease
-- ARGV: 1 now|'', 2 'acquire'|'release', 3 owner, 4 ttl ms
-- -> {'ok'} | {'held'} (acquire: another owner's lease has not expired)
local now = now_ms(ARGV[1])
local value = redis.call('GET', KEYS[1])
local holder, expires = nil, 0
if value then
  local bar = string.find(value, '|', 1, true)
  expires, holder = tonumber(string.sub(value, 1, bar - 1)), string.sub(value, bar + 1)
end
if ARGV[2] == 'release' then
  if holder == ARGV[3] then redis.call('DEL', KEYS[1]) end
  return {'ok'}
end
if holder and holder ~= ARGV[3] and expires > now then return {'held'} end
local ttl = tonumber(ARGV[4])
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], int(now + ttl) .. '|' .. ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[1], int(now + ttl) .. '|' .. ARGV[3])
end
return {'ok'}

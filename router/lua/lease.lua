-- The dispatcher lease and the tick marker, each '<expires_ms>|<owner>', compared with store
-- time (so they also work under the override clock); on Redis time the keys also carry a PX
-- TTL. The tick marker names the owner that makes the tenant's full pass of the tick.
-- KEYS: 1 lease; for 'open' also 2 tick marker, 3 queue, 4 offers, 5 idx:revs, 6 policy
-- ARGV: 1 now|'', 2 'acquire'|'release'|'open', 3 owner, 4 ttl ms, 5 tick ms ('open'),
--       6 what the owner's last full pass, which found nothing to do, rests on ('' none;
--       'open'): the agents' change-log head, and while agents hold work
--       '<head>|<until ms, 0: none>|<policy version>' (quiet before until, on that version),
--       7 '1': only look (the tick marked, the answer as 'open' gives it, but no lease taken:
--       a 'full' or 'wake' pass is opened again just before it runs)
-- -> acquire: {'ok'} | {'held'} (another owner's lease has not expired); release: {'ok'}
-- -> open: {'full'} | {'wake'} (the lease taken) | {'idle'} | {'held'} (nothing written)
--          | {'quiet'} (the tick marked, no lease: nothing queued or offered, no agent
--            changed since that pass, and while agents hold work, before its until and
--            on its policy version)
local now = now_ms()
local owner = ARGV[3]

local function holder(key)
  local value = redis.call('GET', key)
  if not value then return nil, 0 end
  local bar = string.find(value, '|', 1, true)
  return string.sub(value, bar + 1), tonumber(string.sub(value, 1, bar - 1))
end

-- Another owner's mark at key has not expired.
local function taken(key)
  local who, expires = holder(key)
  return who ~= nil and who ~= owner and expires > now
end

-- Whether what the owner's last quiet full pass rests on (ARGV 6) still stands.
local function quiet(at)
  local head, untl, version = string.match(at, '^([^|]*)|(%d+)|(%d+)$')
  if not head then head = at end
  if tonumber(redis.call('ZSCORE', KEYS[5], '') or '-1') ~= tonumber(head) then return false end
  if not untl then return true end
  if tonumber(untl) > 0 and now >= tonumber(untl) then return false end
  local policy = redis.call('GET', KEYS[6])
  local current = 0
  if policy then current = tonumber(cjson.decode(policy)['version']) or 0 end
  return current == tonumber(version)
end

local function mark(key, ttl)
  if CLOCK == '' then
    redis.call('SET', key, int(now + ttl) .. '|' .. owner, 'PX', ttl)
  else
    redis.call('SET', key, int(now + ttl) .. '|' .. owner)
  end
end

if ARGV[2] == 'release' then
  if holder(KEYS[1]) == owner then redis.call('DEL', KEYS[1]) end
  return {'ok'}
end
if taken(KEYS[1]) then return {'held'} end
local ttl = tonumber(ARGV[4])
if ARGV[2] == 'acquire' then
  mark(KEYS[1], ttl)
  return {'ok'}
end
local tick, peek = tonumber(ARGV[5]), ARGV[7] == '1'
if tick > 0 and not taken(KEYS[2]) then
  mark(KEYS[2], tick)
  if ARGV[6] ~= '' and redis.call('ZCARD', KEYS[3]) == 0 and redis.call('ZCARD', KEYS[4]) == 0
      and quiet(ARGV[6]) then
    return {'quiet'}
  end
  if not peek then mark(KEYS[1], ttl) end
  return {'full'}
end
if redis.call('ZCARD', KEYS[3]) == 0 then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if #first == 0 or tonumber(first[2]) > now then return {'idle'} end
end
if not peek then mark(KEYS[1], ttl) end
return {'wake'}

-- The routing snapshot's first read (read-only): what changed in the routing index since the
-- caller's mirror of it was current, or the whole of idx:ready.
-- KEYS: 1 policy, 2 agents, 3 queue, 4 idx:ready, 5 idx:revs, 6 idx:version, 7 req,
--       8.. idx:skill:<skill> of each required skill (none: every agent)
-- ARGV: 1 now|'', 2 request_id ('' = none), 3 index version this code maintains, 4 the rev
--       the mirror is at ('' = none: send all), 5 the most changed agents sent as a delta
-- -> {'unindexed'} (the index was never built by this version: rebuild, then ask again)
--    | {'ok', now, policy JSON or '', agents, queued, request call id or '', skilled agents,
--       head rev, 'delta' | 'all', {agent id, rev, units or '', ...}}
--    'delta': every agent whose rev is above ARGV[4], units '' when it is not in idx:ready
--    (also when deleted); 'all': every agent in idx:ready (when ARGV[4] is '' or further
--    behind than ARGV[5] changes); 'reset': the same, ARGV[4] being ahead of the counter
--    (a failover to a node whose clock lags, or keys rewritten: the mirror starts over)
local now = now_ms(ARGV[1])
if redis.call('GET', KEYS[6]) ~= ARGV[3] then return {'unindexed'} end
local seen = ''
if ARGV[2] ~= '' then seen = redis.call('HGET', KEYS[7], 'call_id') or '' end
local skilled
if #KEYS == 8 then
  skilled = redis.call('SCARD', KEYS[8])
elseif #KEYS > 8 then
  skilled = #redis.call('SINTER', unpack(KEYS, 8))
else
  skilled = redis.call('ZCARD', KEYS[2])
end
local head = redis.call('ZSCORE', KEYS[5], '') or '0'
local CHUNK = 4000  -- stays below Lua's limit on unpack()ed arguments
local out, mode = {}, 'all'
local since = ARGV[4]
if since ~= '' and tonumber(since) > tonumber(head) then mode = 'reset' end
if since ~= '' and tonumber(since) <= tonumber(head)
   and redis.call('ZCOUNT', KEYS[5], '(' .. since, '+inf') <= tonumber(ARGV[5]) then
  mode = 'delta'
  local changed = redis.call('ZRANGE', KEYS[5], '(' .. since, '+inf', 'BYSCORE', 'WITHSCORES')
  local ids, revs = {}, {}
  for i = 1, #changed, 2 do
    if changed[i] ~= '' then
      ids[#ids + 1] = changed[i]
      revs[#revs + 1] = changed[i + 1]
    end
  end
  for first = 1, #ids, CHUNK do
    local last = math.min(first + CHUNK - 1, #ids)
    local units = redis.call('ZMSCORE', KEYS[4], unpack(ids, first, last))
    for i = first, last do
      out[#out + 1] = ids[i]
      out[#out + 1] = revs[i]
      out[#out + 1] = units[i - first + 1] or ''
    end
  end
else
  local ready = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  for first = 1, #ready, 2 * CHUNK do
    local last = math.min(first + 2 * CHUNK - 1, #ready)
    local ids = {}
    for i = first, last, 2 do ids[#ids + 1] = ready[i] end
    local revs = redis.call('ZMSCORE', KEYS[5], unpack(ids))
    for i = 1, #ids do
      out[#out + 1] = ids[i]
      out[#out + 1] = revs[i] or ''
      out[#out + 1] = ready[first + 2 * (i - 1) + 1]
    end
  end
end
return {'ok', int(now), redis.call('GET', KEYS[1]) or '', redis.call('ZCARD', KEYS[2]),
        redis.call('ZCARD', KEYS[3]), seen, skilled, head, mode, out}

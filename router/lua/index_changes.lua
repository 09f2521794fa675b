-- The routing snapshot's first read (read-only): what changed in the routing index since the
-- caller's mirror of it was current, or the whole of idx:ready; and the same for heartbeats.
-- KEYS: 1 policy, 2 agents, 3 queue, 4 idx:ready, 5 idx:revs, 6 idx:version, 7 req,
--       8 idx:beats, 9 idx:beatlog, 10 idx:gone, 11.. idx:skill:<skill> of each required
--       skill (none: every agent)
-- ARGV: 1 now|'', 2 request_id ('' = none), 3 index version this code maintains, 4 the rev
--       the mirror is at ('' = none: send all), 5 the most changes sent as a delta, 6 the
--       heartbeat rev the mirror is at ('' = none)
-- -> {'unindexed'} (the index was never built by this version: rebuild, then ask again)
--    | {'ok', now, policy JSON or '', agents, queued, request call id or '', skilled agents,
--       head rev, 'delta' | 'all' | 'reset', {agent id, rev, units or '', ...},
--       heartbeat head rev, 'delta' | 'all', {agent id, heartbeat rev, heartbeat ms, ...}}
--    'delta': every agent whose rev is above ARGV[4], units '' when it is not in idx:ready
--    (also when deleted); 'all': every agent in idx:ready (when ARGV[4] is '' or further
--    behind than ARGV[5] changes); 'reset': the same, ARGV[4] being ahead of the counter
--    (a failover to a node whose clock lags, or keys rewritten: the mirror starts over);
--    'all' too when ARGV[4] is below idx:gone's floor (a deletion since may be pruned).
--    Heartbeats likewise: those logged above ARGV[6], or every agent's latest.
local now = now_ms()
if redis.call('GET', KEYS[6]) ~= ARGV[3] then return {'unindexed'} end
local seen = ''
if ARGV[2] ~= '' then seen = redis.call('HGET', KEYS[7], 'call_id') or '' end
local skilled
if #KEYS == 11 then
  skilled = redis.call('SCARD', KEYS[11])
elseif #KEYS > 11 then
  skilled = #redis.call('SINTER', unpack(KEYS, 11))
else
  skilled = redis.call('ZCARD', KEYS[2])
end
local CHUNK = 4000  -- stays below Lua's limit on unpack()ed arguments

-- The members of log set `key` scored from `min` on (its counter '' left out), as two lists.
local function members(key, min)
  local changed = redis.call('ZRANGE', key, min, '+inf', 'BYSCORE', 'WITHSCORES')
  local ids, revs = {}, {}
  for i = 1, #changed, 2 do
    if changed[i] ~= '' then
      ids[#ids + 1] = changed[i]
      revs[#revs + 1] = changed[i + 1]
    end
  end
  return ids, revs
end

-- The members of log set `key` scored above `since` (its counter '' left out), as two lists,
-- or nil when `since` is '', ahead of the counter `head`, below `floor` (entries up to it may
-- be pruned) or more than ARGV[5] behind.
local function logged_since(key, since, head, floor)
  if since == '' or tonumber(since) > tonumber(head) or tonumber(since) < floor
     or redis.call('ZCOUNT', key, '(' .. since, '+inf') > tonumber(ARGV[5]) then
    return nil
  end
  return members(key, '(' .. since)
end

-- {id, score in `key` or '', ...} for the ids, in chunks (each with its rev when `revs`).
local function scored(key, ids, revs)
  local flat = {}
  for first = 1, #ids, CHUNK do
    local last = math.min(first + CHUNK - 1, #ids)
    local scores = redis.call('ZMSCORE', key, unpack(ids, first, last))
    for i = first, last do
      flat[#flat + 1] = ids[i]
      if revs then flat[#flat + 1] = revs[i] end
      flat[#flat + 1] = scores[i - first + 1] or ''
    end
  end
  return flat
end

local head = redis.call('ZSCORE', KEYS[5], '') or '0'
local out, mode
local floor = tonumber(redis.call('ZSCORE', KEYS[10], '') or '0')
local ids, revs = logged_since(KEYS[5], ARGV[4], head, floor)
if ids then
  mode = 'delta'
  out = {}
  local units = scored(KEYS[4], ids, nil)
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = revs[i]
    out[#out + 1] = units[2 * i]
  end
else
  mode = 'all'
  if ARGV[4] ~= '' and tonumber(ARGV[4]) > tonumber(head) then mode = 'reset' end
  local ready = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  local ready_ids, units = {}, {}
  for i = 1, #ready, 2 do
    ready_ids[#ready_ids + 1] = ready[i]
    units[#units + 1] = ready[i + 1]
  end
  local with_revs = scored(KEYS[5], ready_ids, nil)
  out = {}
  for i = 1, #ready_ids do
    out[#out + 1] = ready_ids[i]
    out[#out + 1] = with_revs[2 * i]
    out[#out + 1] = units[i]
  end
end

local beat_head = redis.call('ZSCORE', KEYS[9], '') or '0'
local beat_mode = 'delta'
local beat_ids, beat_revs = logged_since(KEYS[9], mode == 'delta' and ARGV[6] or '', beat_head, 0)
if not beat_ids then
  beat_mode = 'all'
  beat_ids, beat_revs = members(KEYS[9], '-inf')
end
local beats = scored(KEYS[8], beat_ids, beat_revs)
return {'ok', int(now), redis.call('GET', KEYS[1]) or '', redis.call('ZCARD', KEYS[2]),
        redis.call('ZCARD', KEYS[3]), seen, skilled, head, mode, out,
        beat_head, beat_mode, beats}

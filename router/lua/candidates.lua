-- The routing snapshot's first read (read-only): who could take a call, per the indexes.
-- KEYS: 1 policy, 2 agents, 3 queue, 4 idx:ready, 5 idx:rev, 6 idx:version, 7 req,
--       8.. idx:skill:<skill> of each required skill (none: every agent)
-- ARGV: 1 now|'', 2 request_id ('' = none), 3 index version this code maintains, 4 the most
--       units of work in progress an agent may hold and still take the call (the caller's
--       reading of the policy; it checks that against the policy returned)
-- -> {'unindexed'} (the index was never built by this version: rebuild, then ask again)
--    | {'ok', now, policy JSON or '', agents, queued, request call id or '', skilled agents,
--       skilled agents in idx:ready, {agent id, rev, ...} of those within ARGV[4]}
local now = now_ms(ARGV[1])
if redis.call('GET', KEYS[6]) ~= ARGV[3] then return {'unindexed'} end
local seen = ''
if ARGV[2] ~= '' then seen = redis.call('HGET', KEYS[7], 'call_id') or '' end
local skilled
if #KEYS >= 8 then
  skilled = redis.call('SINTER', unpack(KEYS, 8))
else
  skilled = redis.call('ZRANGE', KEYS[2], 0, -1)
end
local room = tonumber(ARGV[4])
local ready, in_ready = {}, 0
local CHUNK = 4000  -- stays below Lua's limit on unpack()ed arguments
for first = 1, #skilled, CHUNK do
  local last = math.min(first + CHUNK - 1, #skilled)
  local scores = redis.call('ZMSCORE', KEYS[4], unpack(skilled, first, last))
  local ids = {}
  for i = first, last do
    local score = scores[i - first + 1]
    if score then
      in_ready = in_ready + 1
      if tonumber(score) <= room then ids[#ids + 1] = skilled[i] end
    end
  end
  if #ids > 0 then
    local revs = redis.call('HMGET', KEYS[5], unpack(ids))
    for i = 1, #ids do
      ready[#ready + 1] = ids[i]
      ready[#ready + 1] = revs[i] or ''
    end
  end
end
return {'ok', int(now), redis.call('GET', KEYS[1]) or '', redis.call('ZCARD', KEYS[2]),
        redis.call('ZCARD', KEYS[3]), seen, #skilled, in_ready, ready}

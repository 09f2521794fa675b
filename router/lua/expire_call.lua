-- A queued call reached its channel's queue time limit: it leaves the queue as EXPIRED. The
-- limit counts from when an agent last handed the call back after holding it
-- ('handed_back', set by requeue), else from its age origin. The queue:waits member the
-- caller found the call by, when it no longer matches a queued call (one an earlier version
-- left: its scripts did not keep the index), is removed whatever the answer.
-- KEYS: 1 call, 2 queue, 3 events, 4 timeline, 5 history, 6 policy, 7 queue:waits
-- ARGV: 1 now|'', 2 call_id, 3 max_wait_ms, 4 max_wait_s, 5 record_ttl_ms, 6 maxlen,
--       7 the policy version the limit was read from, 8 the queue:waits member the caller
--       found the call by ('' = none)
-- -> {'missing'} | {'unchanged'} (no longer queued, not waited that long, or the policy
--    changed since) | {'ok'}
local now = now_ms()
local found = ARGV[8]
if redis.call('EXISTS', KEYS[1]) == 0 then
  if found ~= '' then redis.call('ZREM', KEYS[7], found) end
  return {'missing'}
end
local c = redis.call('HMGET', KEYS[1], 'status', 'origin', 'channel', 'handed_back')
local member = nil
if c[1] == 'queued' then member = wait_member(KEYS[1], ARGV[2]) end
local gone = {}  -- queue:waits members to remove, in one ZREM (it may empty the key)
if found ~= '' and found ~= member then gone[1] = found end
local limit = tonumber(ARGV[3])
local waited = math.max(0, now - tonumber(c[4] or c[2]))
local due = c[1] == 'queued' and limit > 0 and waited >= limit
if due then
  local stored = redis.call('GET', KEYS[6])  -- compact JSON: its one "version" key
  local version = stored and tonumber(string.match(stored, '"version":(%d+)')) or 0
  due = version == tonumber(ARGV[7])
end
if not due then
  if #gone > 0 then redis.call('ZREM', KEYS[7], unpack(gone)) end
  return {'unchanged'}
end
redis.call('ZREM', KEYS[2], ARGV[2])
if member then gone[#gone + 1] = member end
if #gone > 0 then redis.call('ZREM', KEYS[7], unpack(gone)) end
redis.call('HSET', KEYS[1], 'status', 'expired', 'updated', int(now))
local data = {'channel', c[3], 'max_wait_s', ARGV[4]}
local id = emit_call(KEYS[3], KEYS[4], ARGV[6], 'EXPIRED', now, ARGV[2], '', data)
add_history(KEYS[5], id, 'expired', c[3], now, waited, ARGV[2])
settle_call(KEYS[1], KEYS[4], true, ARGV[5])
return {'ok'}

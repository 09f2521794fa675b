-- Queue a new call, or change nothing.
-- KEYS: 1 req, 2 call, 3 queue, 4 events, 5 timeline, 6 queue:waits
-- ARGV: 1 now|'', 2 request_id ('' = none), 3 fingerprint, 4 call_id, 5 call JSON, 6 channel,
--       7 age origin (enqueued_ms or created_ms, 0 = now), 8 priority, 9 excluded JSON,
--       10 aging ms per priority level, 11 max queue, 12 request TTL ms, 13 maxlen
-- -> {'replayed'} | {'fingerprint'} | {'exists', status, assignment id} | {'full', depth}
--    | {'ok', position, now, origin}
local now = now_ms()
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[3] then return {'replayed'} end
  return {'fingerprint'}
end
local c = redis.call('HMGET', KEYS[2], 'status', 'assignment_id')
if c[1] then return {'exists', c[1], c[2] or ''} end
local depth = redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[11]) then return {'full', depth} end
local origin = tonumber(ARGV[7])
if origin == 0 then origin = now end
NEW_TIMELINE[KEYS[5]] = true
redis.call('HSET', KEYS[2], 'call', ARGV[5], 'channel', ARGV[6], 'status', 'queued',
           'assignment_id', '', 'updated', int(now), 'origin', int(origin),
           'enqueued', int(origin), 'priority', ARGV[8], 'excluded', ARGV[9],
           'callback', '0', 'at_risk', '0', 'breached', '0')
remember_trace(KEYS[2])
redis.call('ZADD', KEYS[3], queue_score(KEYS[2], tonumber(ARGV[10])), ARGV[4])
add_wait(KEYS[6], KEYS[2], ARGV[4])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[3], 'call_id', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[12])
end
local position = redis.call('ZRANK', KEYS[3], ARGV[4]) + 1
emit_call(KEYS[4], KEYS[5], ARGV[13], 'QUEUED', now, ARGV[4], '',
          {'position', tostring(position)})
settle_call(KEYS[2], KEYS[5], false, 0)
return {'ok', position, int(now), int(origin)}

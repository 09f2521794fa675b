-- A QUEUED caller asks to be called back; they keep their place.
-- KEYS: 1 call, 2 events, 3 timeline
-- ARGV: 1 now|'', 2 call_id, 3 maxlen
-- -> {'missing'} | {'status', status} (not QUEUED) | {'ok'}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local c = redis.call('HMGET', KEYS[1], 'status', 'callback')
if c[1] ~= 'queued' then return {'status', c[1]} end
if c[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'callback', '1', 'updated', int(now))
  emit_call(KEYS[2], KEYS[3], ARGV[3], 'CALLBACK_REQUESTED', now, ARGV[2], '', {})
  settle_call(KEYS[1], KEYS[3], false, 0)
end
return {'ok'}

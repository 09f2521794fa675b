-- KEYS: 1 call, 2 asg (the call's assignment as read), 3 agent, 4 work, 5 events
-- ARGV: 1 now|'', 2 assignment id read, 3 retention_ms, 4 record_ttl_ms, 5 maxlen, 6 call_id
-- -> {'missing'} | {'retry'} (the call moved on since the read) | {'completed'}
--    | {'ok', call hash, asg hash}
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local c = redis.call('HMGET', KEYS[1], 'status', 'assignment_id')
if c[2] ~= ARGV[2] then return {'retry'} end
if c[1] == 'completed' then return {'completed'} end
if c[1] == 'assigned' and redis.call('HGET', KEYS[2], 'state') == 'active' then
  end_assignment(KEYS[2], KEYS[3], KEYS[4], KEYS[1], KEYS[5], ARGV[2], 'cancelled',
                 ending_options(now, '', 0, ARGV[3], ARGV[4], ARGV[5]))
elseif c[1] == 'released' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  emit(KEYS[5], ARGV[5], 'CANCELLED', now, ARGV[6], '', {})
end
return {'ok', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}

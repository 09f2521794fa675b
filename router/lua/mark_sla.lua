-- Flag a QUEUED call as SLA at risk (raise its priority, re-score it) or breached, once each.
-- KEYS: 1 call, 2 queue, 3 events, 4 timeline
-- ARGV: 1 now|'', 2 call_id, 3 'at_risk'|'breached', 4 priority boost, 5 aging ms per
--       priority level, 6 escalation group, 7 maxlen
-- -> {'missing'} | {'unchanged'} | {'ok'}
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local flag = ARGV[3]
local c = redis.call('HMGET', KEYS[1], 'status', flag, 'priority', 'channel')
if c[1] ~= 'queued' or c[2] == '1' then return {'unchanged'} end
local data = {'group', ARGV[6], 'channel', c[4]}
if flag == 'at_risk' then
  local priority = math.min(10, tonumber(c[3]) + tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'at_risk', '1', 'priority', int(priority), 'updated', int(now))
  redis.call('ZADD', KEYS[2], queue_score(KEYS[1], tonumber(ARGV[5])), ARGV[2])
  emit_call(KEYS[3], KEYS[4], ARGV[7], 'SLA_AT_RISK', now, ARGV[2], '', data)
else
  redis.call('HSET', KEYS[1], 'breached', '1', 'updated', int(now))
  emit_call(KEYS[3], KEYS[4], ARGV[7], 'SLA_BREACHED', now, ARGV[2], '', data)
end
settle_call(KEYS[1], KEYS[4], false, 0)
return {'ok'}

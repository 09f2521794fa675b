-- Build queue:waits for calls queued before it existed: run over the whole queue, in
-- batches, by RedisStore.build_waits; the scripts keep it from then on. A call already in it
-- is left as it is, one no longer queued is skipped.
-- KEYS: 1 queue:waits, 2 queue, 3.. call keys
-- ARGV: 1 now|'', 2.. call ids (as KEYS 3..)
-- -> {'ok', calls added}
local added = 0
for i = 3, #KEYS do
  local call_id = ARGV[i - 1]
  if redis.call('ZSCORE', KEYS[2], call_id) and redis.call('HGET', KEYS[i], 'status') == 'queued'
  then
    local member = wait_member(KEYS[i], call_id)
    if member then added = added + redis.call('ZADD', KEYS[1], 0, member) end
  end
end
return {'ok', added}

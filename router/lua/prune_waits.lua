-- Drop queue:waits members no waiting call matches (its record gone, not queued, or its wait
-- begun at another time): entries a replica of an earlier version left, whose scripts did
-- not keep the index. Run over the whole index, in batches, by RedisStore.build_waits.
-- KEYS: 1 queue:waits, 2.. the members' call keys
-- ARGV: 1 now|'', 2.. members (as KEYS 2..)
-- -> {'ok', members dropped}
local gone = {}
for i = 2, #KEYS do
  local member = ARGV[i]
  local call_id = string.match(member, '^[^|]*|[^|]*|(.+)$')
  local current = nil
  if call_id and redis.call('HGET', KEYS[i], 'status') == 'queued' then
    current = wait_member(KEYS[i], call_id)
  end
  if current ~= member then gone[#gone + 1] = member end
end
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end  -- last: it may empty the key
return {'ok', #gone}

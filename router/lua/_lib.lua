-- Shared prelude: router.redis_store prepends this file to every script before loading it.
-- Conventions: every key is declared in KEYS and carries the tenant hash tag (single slot);
-- outcomes are returned as {status, ...} arrays, never raised as script errors.
-- No command touches a key after one in the same run may have emptied or deleted it: while
-- the tenant's slot migrates to another node, the node runs a script only if every key it
-- declares exists there, and a command on a key that does not (any more) fails the script
-- with "non local key", keeping what it wrote before. So removals that may empty a key come
-- after its last read or write, once for a loop (e.g. reclaim.lua's ZREM of the offers).
-- The in-memory store (router/memory_*.py) repeats every rule here step for step.

local TIMELINE_MAX = 200      -- store_common.TIMELINE_MAX
local HISTORY_MS = 7200000    -- store_common.HISTORY_MS
local RATE_WINDOW_MS = 900000  -- store_common.RATE_WINDOW_MS

-- ARGV[1] of every script: '<clock>' or '<clock>;<traceparent>'. The clock is epoch ms from
-- the store's override clock, or '' to take Redis server time (allowed in scripts since Redis
-- 5: effects replication); the W3C traceparent ('00-<trace id>-<span id>-<flags>') names the
-- request being served: every event the script writes carries its trace id (data field
-- trace_id), and a call it creates keeps it (call hash field trace; remember_trace).
local CLOCK = string.match(ARGV[1] or '', '^[^;]*')
local TRACE = string.match(ARGV[1] or '', ';(00%-%x+%-%x+%-%x%x)$') or ''
if #TRACE ~= 55 then TRACE = '' end  -- 32 and 16 hex digits, nothing else
local TRACE_ID = string.sub(TRACE, 4, 35)

-- The clock: CLOCK, else Redis server time.
local function now_ms()
  local n = tonumber(CLOCK)
  if n then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The keys this run has deleted or emptied: a step that would read one takes it as empty
-- without a command (see the conventions above).
local EMPTIED = {}

-- DEL the keys, noting them in EMPTIED.
local function delete(...)
  redis.call('DEL', ...)
  for _, key in ipairs({...}) do EMPTIED[key] = true end
end

-- Full precision for the performance sums (tostring would keep only 14 digits).
local function fmt(x)
  return string.format('%.17g', x)
end

-- An integral number (epoch ms, a count) as decimal digits, never in exponent form.
local function int(x)
  return string.format('%d', x)
end

local function emit(events_key, maxlen, kind, ts, call_id, agent_id, data)
  local args = {events_key, 'MAXLEN', '~', maxlen, '*',
                'type', kind, 'ts', int(ts), 'call_id', call_id, 'agent_id', agent_id}
  for i = 1, #data do args[#args + 1] = data[i] end
  if TRACE_ID ~= '' then
    args[#args + 1] = 'trace_id'
    args[#args + 1] = TRACE_ID
  end
  return redis.call('XADD', unpack(args))
end

-- The timelines this run starts over (a new call's, which may find the one of an earlier
-- call of its id): the next emit_call keeps its own event only, where a DEL before it would
-- have left a key that does not exist for RPUSH (see the conventions above).
local NEW_TIMELINE = {}

-- An event about a call: the stream, plus the call's own timeline (the latest TIMELINE_MAX,
-- as JSON arrays [id, type, ts, call_id, agent_id, k, v, ...]; see redis_schema).
local function emit_call(events_key, timeline_key, maxlen, kind, ts, call_id, agent_id, data)
  local id = emit(events_key, maxlen, kind, ts, call_id, agent_id, data)
  local item = {id, kind, int(ts), call_id, agent_id}
  for i = 1, #data do item[#item + 1] = tostring(data[i]) end
  if TRACE_ID ~= '' then
    item[#item + 1] = 'trace_id'
    item[#item + 1] = TRACE_ID
  end
  redis.call('RPUSH', timeline_key, cjson.encode(item))
  local keep = TIMELINE_MAX
  if NEW_TIMELINE[timeline_key] then keep, NEW_TIMELINE[timeline_key] = 1, nil end
  redis.call('LTRIM', timeline_key, -keep, -1)
  return id
end

-- A new call keeps the trace of the request that created it: its placement from the queue,
-- later, continues that trace (router.tracing.queued_work).
local function remember_trace(call_key)
  if TRACE ~= '' then redis.call('HSET', call_key, 'trace', TRACE) end
end

-- Work on a call while no request is served (an offer's time-out, a reclaim: the dispatcher's)
-- continues the trace the call kept: the events written from here on carry its id
-- (router.tracing.call_work). A request's own trace stays.
local REQUEST_TRACE = TRACE
local function continue_call_trace(call_key)
  if REQUEST_TRACE ~= '' then return end
  TRACE = redis.call('HGET', call_key, 'trace') or ''
  if #TRACE ~= 55 then TRACE = '' end
  TRACE_ID = string.sub(TRACE, 4, 35)
end

-- A live call and its timeline never expire; a finished one (and its timeline) goes
-- record_ttl_ms after its last change. Called after the script's last emit_call.
local function settle_call(call_key, timeline_key, finished, record_ttl_ms)
  if finished then
    redis.call('PEXPIRE', call_key, record_ttl_ms)
    redis.call('PEXPIRE', timeline_key, record_ttl_ms)
  else
    redis.call('PERSIST', call_key)
    redis.call('PERSIST', timeline_key)
  end
end

-- History members sort by time, then (ties) by the padded id of their event, i.e. in the
-- order they were written: '<ms 20 digits>-<n 20 digits>|kind|channel|wait_ms|call_id'.
local function add_history(history_key, event_id, kind, channel, now, wait, call_id, done_key)
  local dash = string.find(event_id, '-', 1, true)
  local ms, n = string.sub(event_id, 1, dash - 1), string.sub(event_id, dash + 1)
  local key = string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #n) .. n
  redis.call('ZADD', history_key, now,
             key .. '|' .. kind .. '|' .. channel .. '|' .. int(wait) .. '|' .. call_id)
  redis.call('ZREMRANGEBYSCORE', history_key, '-inf', '(' .. int(now - HISTORY_MS))
  if done_key then  -- a completion: also counted in its channel's window (Keys.done)
    redis.call('ZADD', done_key, now, key)
    redis.call('ZREMRANGEBYSCORE', done_key, '-inf', '(' .. int(now - RATE_WINDOW_MS))
  end
end

-- --- the agent's work -----------------------------------------------------------------------
-- Field a:<assignment_id> = '<channel>|<units>|<start>|<offered 0/1>|<wrap_until>'. It holds
-- capacity while wrap_until is 0 (in progress or offered) or still in the future (wrap-up).

local function parse_work(value)
  local p = {}
  for part in string.gmatch(value, '[^|]+') do p[#p + 1] = part end
  return {channel = p[1], units = p[2], start = tonumber(p[3]), offered = p[4] or '0',
          wrap = tonumber(p[5] or '0')}
end

local function work_value(channel, units, start, offered, wrap)
  return channel .. '|' .. units .. '|' .. int(start) .. '|' .. offered .. '|' .. int(wrap)
end

-- A work span: {its end (the score), '<assignment id>|<start>|<end>|<units>'}.
local function span(asg_id, start, finish, units)
  return {finish, asg_id .. '|' .. int(start) .. '|' .. int(finish) .. '|' .. units}
end

-- Record finished spans and drop those that ended before now - retention_ms: one ZADD of the
-- spans that stay (one ending earlier would go at once), then the trim, which empties the
-- key when every span in it is older (noted in EMPTIED: then nothing reads it again).
local function add_spans(work_key, spans, now, retention_ms)
  local cutoff = int(now - retention_ms)
  local args = {}
  for _, s in ipairs(spans) do
    if s[1] >= now - retention_ms then
      args[#args + 1] = s[1]
      args[#args + 1] = s[2]
    end
  end
  if #args > 0 then
    redis.call('ZADD', work_key, unpack(args))
    EMPTIED[work_key] = nil
  elseif EMPTIED[work_key] then
    return
  elseif redis.call('ZCOUNT', work_key, cutoff, '+inf') == 0 then
    EMPTIED[work_key] = true
  end
  redis.call('ZREMRANGEBYSCORE', work_key, '-inf', '(' .. cutoff)
end

-- Work the agent holds at `now`: {count, in_progress (any work without a wrap-up),
-- latest wrap_until still ahead (0: none)}.
local function held(agent_key, now)
  local count, busy, latest = 0, false, 0
  local flat = redis.call('HGETALL', agent_key)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'a:' then
      local w = parse_work(flat[i + 1])
      if w.wrap == 0 then
        count, busy = count + 1, true
      elseif w.wrap > now then
        count = count + 1
        if w.wrap > latest then latest = w.wrap end
      end
    end
  end
  return {count, busy, latest}
end

-- The wrap-ups that have ended: their fields in the agent's hash, and their spans.
local function ended_wrap_ups(agent_key, now)
  local fields, spans = {}, {}
  local flat = redis.call('HGETALL', agent_key)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'a:' then
      local w = parse_work(flat[i + 1])
      if w.wrap > 0 and w.wrap <= now then
        fields[#fields + 1] = flat[i]
        spans[#spans + 1] = span(string.sub(flat[i], 3), w.start, w.wrap, w.units)
      end
    end
  end
  return fields, spans
end

-- Move wrap-ups that have ended into the work spans; readers already see them that way.
local function sweep(agent_key, work_key, now, retention_ms)
  local fields, spans = ended_wrap_ups(agent_key, now)
  if #fields == 0 then return end
  redis.call('HDEL', agent_key, unpack(fields))
  add_spans(work_key, spans, now, retention_ms)
end

-- The longest-idle clock: once nothing is in progress, the agent is free when the last
-- wrap-up ends (or now).
local function mark_free(agent_key, now)
  local h = held(agent_key, now)
  if not h[2] then redis.call('HSET', agent_key, 'last_free', math.max(now, h[3])) end
end

-- The work spans ending at `min` or later.
local function spans_since(work_key, min)
  if EMPTIED[work_key] then return {} end
  return redis.call('ZRANGEBYSCORE', work_key, min, '+inf')
end

-- The agent as the store returns it: its hash, the work spans of the retention window, now.
local function agent_view(agent_key, work_key, now, retention_ms)
  return {redis.call('HGETALL', agent_key), spans_since(work_key, now - retention_ms), int(now)}
end

-- The agent's hash and its work spans ending at now - window_ms or later (what a replica
-- reads into its agent cache), or nothing when window_ms < 0.
local function agent_after(agent_key, work_key, now, window_ms)
  if not window_ms or window_ms < 0 then return {} end
  return {redis.call('HGETALL', agent_key), spans_since(work_key, now - window_ms)}
end

-- Give back the capacity assignment asg_id held (its span [created, now] is recorded, in one
-- add_spans with the sweep's: a span ending now keeps the work key), bump seq and move the
-- longest-idle clock.
local function free_slot(agent_key, work_key, asg_key, asg_id, now, retention_ms)
  if redis.call('EXISTS', agent_key) == 0 then return end
  local fields, spans = ended_wrap_ups(agent_key, now)
  local a = redis.call('HMGET', asg_key, 'created', 'units')
  fields[#fields + 1] = 'a:' .. asg_id
  spans[#spans + 1] = span(asg_id, tonumber(a[1]), now, a[2])
  redis.call('HDEL', agent_key, unpack(fields))
  add_spans(work_key, spans, now, retention_ms)
  redis.call('HINCRBY', agent_key, 'seq', 1)
  mark_free(agent_key, now)
end

-- Fold an outcome into the agent's decayed performance sums: scoring.performance.fold, the
-- same operations in the same order.
local function fold(agent_key, outcome, half_life_s, now)
  local value = tonumber(outcome)
  if not value or redis.call('EXISTS', agent_key) == 0 then return end
  local p = redis.call('HMGET', agent_key, 'perf_sum', 'perf_weight', 'perf_ts')
  local s, w, ts = tonumber(p[1]) or 0, tonumber(p[2]) or 0, tonumber(p[3]) or 0
  local factor = 1.0
  if ts ~= 0 and half_life_s > 0 then
    factor = 2.0 ^ (-(now - ts) / 1000 / half_life_s)
  end
  redis.call('HSET', agent_key, 'perf_sum', fmt(s * factor + value),
             'perf_weight', fmt(w * factor + 1.0), 'perf_ts', now)
end

-- The assignment ended in `state`; it leaves the offers unless offers_key is nil (the caller
-- takes it off with the others it ends: the ZREM may empty the key).
local function end_assignment(asg_key, offers_key, asg_id, state, now, record_ttl_ms)
  redis.call('HSET', asg_key, 'state', state, 'ended', now)
  redis.call('PEXPIRE', asg_key, record_ttl_ms)
  if offers_key then redis.call('ZREM', offers_key, asg_id) end
end

-- --- the queue ------------------------------------------------------------------------------

-- store.queue_score on the stored age origin and current priority.
local function queue_score(call_key, aging_ms)
  local c = redis.call('HMGET', call_key, 'origin', 'priority')
  return tonumber(c[1]) - tonumber(c[2]) * aging_ms
end

-- queue:waits (ZSET, every score 0): a member per QUEUED call, '<channel>|<since>|<call id>',
-- since (15 digits) when its wait toward the channel's queue time limit began: 'handed_back'
-- if an agent gave it back after holding it, else 'origin' (ordering.limit_from_ms). By
-- member, a channel's calls come in the order their waits began, so the calls past a limit
-- are one ZRANGEBYLEX (RedisStore.due_waits). The fields it is made of never change while
-- the call waits; nil for a call without them.
local function wait_member(call_key, call_id)
  local c = redis.call('HMGET', call_key, 'channel', 'handed_back', 'origin')
  local since = tonumber(c[2] or c[3])
  if not c[1] or not since then return nil end
  return c[1] .. '|' .. string.format('%015d', since) .. '|' .. call_id
end

-- The call, queued, into queue:waits.
local function add_wait(waits_key, call_key, call_id)
  local member = wait_member(call_key, call_id)
  if member then redis.call('ZADD', waits_key, 0, member) end
end

-- The call, leaving the queue, out of queue:waits (before its hash says it left; the ZREM
-- may empty the key: the script's last command on it).
local function remove_wait(waits_key, call_key, call_id)
  local member = wait_member(call_key, call_id)
  if member then redis.call('ZREM', waits_key, member) end
end

-- Put the call back in the queue (and queue:waits) with its original age, agent_id added to
-- the agents who declined it; QUEUED event. Returns the 1-based position.
-- answered: an agent held the call (a release, or accepted work reclaimed): the queue time
-- limit counts again from now (field 'handed_back'); the age origin stays.
local function requeue(k, call_id, agent_id, now, aging_ms, maxlen, answered)
  local c = redis.call('HMGET', k.call, 'origin', 'excluded')
  local excluded = cjson.decode(c[2] or '[]')
  local seen = false
  for _, other in ipairs(excluded) do
    if other == agent_id then seen = true end
  end
  if not seen then excluded[#excluded + 1] = agent_id end
  redis.call('HSET', k.call, 'status', 'queued', 'enqueued', c[1],
             'excluded', cjson.encode(excluded), 'updated', now)
  if answered then redis.call('HSET', k.call, 'handed_back', int(now)) end
  redis.call('ZADD', k.queue, queue_score(k.call, aging_ms), call_id)
  add_wait(k.waits, k.call, call_id)
  local position = redis.call('ZRANK', k.queue, call_id) + 1
  emit_call(k.events, k.timeline, maxlen, 'QUEUED', now, call_id, '',
            {'position', tostring(position)})
  return position
end

-- --- the routing index ----------------------------------------------------------------------
-- idx:ready (ZSET): the agents whose presence is 'available', scored by the units of their
-- work in progress or offered. Wrap-ups are left out of the score (they end by time, with no
-- script running), so the index over-approximates the agents with room, never under.
-- idx:revs (ZSET): agent id -> the 'rev' field of the agent's hash, set anew by every script
-- that changes the hash or the work spans; readers cache decoded agents by it. A rev is the
-- larger of the tenant's last rev + 1 (the member '', which no agent id can be) and the
-- server's time in microseconds: strictly increasing, and never issued twice, not after an
-- agent is deleted and created again, nor after the tenant's keys are flushed, nor after a
-- failover that lost the last writes (the new primary's clock has moved past them, unless
-- it lags the old one's by more than the failover took). A deleted agent keeps its member at
-- the rev of its deletion (for a while: see bury), so the set doubles as a change log: the
-- members scored above a rev are every agent changed or deleted since (replicas keep a
-- mirror of idx:ready by it, router.index_mirror).
-- Every script that changes an agent calls index_agent once, after its last write to it,
-- except the heartbeat script: a heartbeat only sets the 'heartbeat' field, which readers
-- take from idx:beats (see heartbeat.lua), so equal revs mean equal stored state but for it.
-- The next rev of a log sorted set whose member '' holds the last one.
local function next_rev(log_key)
  local t = redis.call('TIME')
  local last = tonumber(redis.call('ZSCORE', log_key, '') or '0')
  return int(math.max(last + 1, tonumber(t[1]) * 1000000 + tonumber(t[2])))
end

-- The agent's next rev, in idx:revs and its hash; returns its score in idx:ready, or nil
-- when it is not to be there (not available, or deleted).
local function stamp_agent(agent_key, rev_key, agent_id)
  local rev = next_rev(rev_key)
  redis.call('ZADD', rev_key, rev, '', rev, agent_id)
  if EMPTIED[agent_key] or redis.call('EXISTS', agent_key) == 0 then return nil end
  redis.call('HSET', agent_key, 'rev', rev)
  local flat = redis.call('HGETALL', agent_key)
  local available, units = false, 0
  for i = 1, #flat, 2 do
    local name = flat[i]
    if name == 'presence' then
      available = flat[i + 1] == 'available'
    elseif string.sub(name, 1, 2) == 'a:' then
      local w = parse_work(flat[i + 1])
      if w.wrap == 0 then units = units + tonumber(w.units) end
    end
  end
  if available then return units end
  return nil
end

-- Once per script, after its last write to the agent: the ZREM may empty idx:ready (the
-- reindex script indexes several agents: stamp_agent each, idx:ready once at the end).
local function index_agent(agent_key, ready_key, rev_key, agent_id)
  local units = stamp_agent(agent_key, rev_key, agent_id)
  if units then
    redis.call('ZADD', ready_key, units, agent_id)
  else
    redis.call('ZREM', ready_key, agent_id)
  end
end

-- idx:gone (ZSET): deleted agent id -> the rev of its deletion, the agent's tombstone in
-- idx:revs; member '' holds the floor, the highest rev of a tombstone pruned. A deletion
-- prunes (up to 64 of) the tombstones older than `keep_us` before its own, so idx:revs holds
-- the agents and the recent deletions only. A reader whose mirror is older than the floor
-- could miss a pruned deletion: it reads the whole index instead (index_changes.lua).
local function bury(revs_key, gone_key, agent_id, keep_us)
  local rev = tonumber(redis.call('ZSCORE', revs_key, agent_id))
  redis.call('ZADD', gone_key, int(rev), agent_id)
  local floor = tonumber(redis.call('ZSCORE', gone_key, '') or '0')
  local old = redis.call('ZRANGE', gone_key, '-inf', '(' .. int(rev - keep_us), 'BYSCORE',
                         'LIMIT', 0, 65, 'WITHSCORES')
  for i = 1, #old, 2 do
    local id, at = old[i], tonumber(old[i + 1])
    if id ~= '' then
      -- an agent created again under the id has a newer rev: not a tombstone any more
      if tonumber(redis.call('ZSCORE', revs_key, id)) == at then
        redis.call('ZREM', revs_key, id)
      end
      redis.call('ZREM', gone_key, id)
      if at > floor then floor = at end
    end
  end
  redis.call('ZADD', gone_key, int(floor), '')
end

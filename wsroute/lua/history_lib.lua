-- history_lib.lua: what route.lua and history_read.lua share about a
-- client's or room's history (see history.go).
--
-- A history is a stream of entries "<offset>-0" and a meta hash: epoch,
-- offset (the last given), run (the run_id of the Redis process that
-- started the epoch).

-- history_run returns this Redis process's run_id, or '' where a script
-- cannot read it: embedded servers for tests and demos (miniredis) refuse
-- INFO server, and have no snapshot to restart from either.
local function history_run()
  local info = redis.pcall('INFO', 'server')
  if type(info) ~= 'string' then
    return ''
  end
  return string.match(info, 'run_id:(%x+)') or ''
end

-- history_epoch returns the stream's epoch, starting a new one (offset 0,
-- the old entries deleted) when it has none — never had one, or lost it:
-- Redis restarted empty, or the meta hash expired — or when it was started
-- by another Redis process. Offsets must never be given twice in an epoch,
-- and a Redis restarted from a snapshot, or a replica promoted in a
-- failover, may have lost the last offsets it gave and would give them
-- again; the run_id changes in both cases. So any restart or failover
-- starts every history afresh, and clients away are told (reason
-- "epoch"), never handed a stream with holes.
--
-- HSET comes first among the writes: a Redis over maxmemory refuses a
-- script's first write when it takes memory, and then nothing is written
-- (once a script has written anything, DEL included, Redis lets the rest
-- through, full or not).
local function history_epoch(meta, history, candidate)
  local run = history_run()
  local current = redis.call('HMGET', meta, 'epoch', 'run')
  if current[1] and current[2] == run then
    return current[1]
  end
  redis.call('HSET', meta, 'epoch', candidate, 'offset', 0, 'run', run)
  redis.call('DEL', history)
  return candidate
end

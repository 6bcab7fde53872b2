-- presence_sweep.lua finds node incarnations that are no longer alive and
-- removes their presence entries, a batch at a time, recording the
-- leaves, so that a dead node's members leave even where nobody asks who
-- is in the room. One node sweeps at a time (the sweeper key, held for a
-- period); scripts run one at a time, so each leave is recorded once.
--
-- KEYS[1]  incarnations (incarnation -> node)
-- KEYS[2]  the sweeper key
-- KEYS[3]  the presence events stream
-- ARGV[1]  key prefix
-- ARGV[2]  this node's incarnation
-- ARGV[3]  how long it holds the sweeper key, in milliseconds
-- ARGV[4]  budget: about how many entries to remove before returning
-- ARGV[5]  the events stream's MAXLEN; 0: no events
-- ARGV[6]  event ID
--
-- Returns {entries removed, 1 if there may be more to sweep}, {0, 0} when
-- another node holds the sweeper key.
local prefix, me = ARGV[1], ARGV[2]
local budget, maxlen, id = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= me then
  return {0, 0}
end
redis.call('SET', KEYS[2], me, 'PX', ARGV[3])

local removed = 0
local instances = redis.call('HGETALL', KEYS[1])
for i = 1, #instances, 2 do
  local incarnation, node = instances[i], instances[i + 1]
  if redis.call('GET', prefix .. 'node:' .. node) ~= incarnation then
    if budget <= 0 then
      return {removed, 1}
    end
    local rooms, all = scanBatch(prefix .. 'rooms-of:' .. incarnation, budget)
    for j = 1, #rooms, 2 do
      if budget <= 0 then
        return {removed, 1}
      end
      local n, finished = reap(prefix, rooms[j], incarnation, node, budget, KEYS[3], maxlen, id)
      removed = removed + n
      budget = budget - n - 1
      if not finished then
        return {removed, 1}
      end
    end
    if not all then
      return {removed, 1}
    end
    -- Every room of the incarnation is swept (each forgot it).
    redis.call('HDEL', KEYS[1], incarnation)
  end
end
return {removed, 0}

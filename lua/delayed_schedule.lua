-- delayed_schedule.lua stores messages that must enter their stream later
-- (see delayed.go), and wakes the movers when one is due before all the
-- others they know of.
--
-- KEYS[1]  the topic's delayed set: score = due time (Unix ms), member =
--          32 hex characters (when scheduled, and random) + the entry's
--          fields, each "<length>:<bytes>"
-- ARGV[1]  the wake channel
-- ARGV[2]  "PUBLISH", or "SPUBLISH" on Redis Cluster
-- ARGV[3…] score, member, score, member…
--
-- ZADD is the first write: a Redis over maxmemory refuses it, and then
-- nothing is stored (see wsroute's route.lua on why the order matters).
-- Returns how many members it added.
local key = KEYS[1]
local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local added = redis.call('ZADD', key, unpack(ARGV, 3))
local earliest
for i = 3, #ARGV, 2 do
  local score = tonumber(ARGV[i])
  if not earliest or score < earliest then
    earliest = score
  end
end
if head[2] == nil or earliest < tonumber(head[2]) then
  redis.call(ARGV[2], ARGV[1], string.format('%d', earliest))
end
return added

-- delayed_schedule.lua stores messages that must enter their stream later
-- (see delayed.go), and wakes the movers when one is due before all the
-- others they know of.
--
-- KEYS[1]     the topic's delayed set: score = due time (Unix ms), member =
--             32 hex characters (when scheduled, and random) + the entry's
--             fields, each "<length>:<bytes>"
-- KEYS[2…]    for PublishOnce, each message's mark (see xadd_once.lua), in
--             the order of the members; none for Publish
-- ARGV[1]     the wake channel
-- ARGV[2]     "PUBLISH", or "SPUBLISH" on Redis Cluster
-- ARGV[3]     the marks' window in milliseconds (0 without marks)
-- ARGV[4…]    score, member, score, member…
--
-- A message whose mark is set (stored or scheduled within the window, or
-- earlier in this call) is not stored; the others are, and get a mark
-- holding "" (no entry ID yet). ZADD is the first write: a Redis over
-- maxmemory refuses it, and then nothing is stored (see wsroute's
-- route.lua on why the order matters).
--
-- Returns, per message, false when it was stored, or the mark found: the
-- earlier entry's ID, or "" for one scheduled.
local key = KEYS[1]
local n = (#ARGV - 3) / 2
local found = {}
local fresh = {}
local marked = {}
local earliest
for i = 1, n do
  local mark = KEYS[i + 1]
  local earlier = false
  if mark then
    earlier = marked[mark] or redis.call('GET', mark)
  end
  found[i] = earlier
  if not earlier then
    local score = ARGV[2 + 2 * i]
    fresh[#fresh + 1] = score
    fresh[#fresh + 1] = ARGV[3 + 2 * i]
    if mark then
      marked[mark] = ''
    end
    score = tonumber(score)
    if not earliest or score < earliest then
      earliest = score
    end
  end
end
if #fresh == 0 then
  return found
end
local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
redis.call('ZADD', key, unpack(fresh))
for mark in pairs(marked) do
  redis.call('SET', mark, '', 'PX', ARGV[3])
end
if head[2] == nil or earliest < tonumber(head[2]) then
  redis.call(ARGV[2], ARGV[1], string.format('%d', earliest))
end
return found

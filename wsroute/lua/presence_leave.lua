-- presence_leave.lua takes connections of this node out of a room's
-- presence, recording a leave for each client left with no connection in
-- it, and takes the node out of the room when it has no member left.
--
-- KEYS[1]  presence:<room>
-- KEYS[2]  presence-of:<incarnation>:<room>
-- KEYS[3]  the presence events stream
-- ARGV[1]  key prefix
-- ARGV[2]  node ID
-- ARGV[3]  incarnation
-- ARGV[4]  room
-- ARGV[5]  the events stream's MAXLEN; 0: no events
-- ARGV[6]  event ID
-- ARGV[7]  "1" when the node has no member left in the room
-- ARGV[8…] connection IDs
--
-- Returns the number of leaves recorded.
local prefix, node, incarnation, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local tally, order = {}, {}
for i = 8, #ARGV do
  local value = redis.call('HGET', KEYS[2], ARGV[i])
  if value then
    redis.call('HDEL', KEYS[2], ARGV[i])
    tallyEntry(tally, order, value)
  end
end
local left = leaveAll(prefix, room, tally, order, node, 'left', KEYS[3], tonumber(ARGV[5]), ARGV[6])
if ARGV[7] == '1' then
  forget(prefix, room, incarnation, node)
end
return left

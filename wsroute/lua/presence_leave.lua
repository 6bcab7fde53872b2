-- presence_leave.lua takes connections of this node out of a room's
-- presence, recording a leave for each client left with no connection in
-- it, and takes the node out of the room when it has no member left.
-- Only entries this node incarnation wrote are removed.
--
-- KEYS[1]  presence:<room>
-- KEYS[2]  presence-count:<room>
-- KEYS[3]  room:<room>
-- KEYS[4]  rooms-of:<incarnation>
-- KEYS[5]  the presence events stream
-- ARGV[1]  node ID
-- ARGV[2]  incarnation
-- ARGV[3]  room
-- ARGV[4]  the events stream's MAXLEN; 0: no events
-- ARGV[5]  event ID
-- ARGV[6]  "1" when the node has no member left in the room
-- ARGV[7…] connection IDs
--
-- Returns the number of leaves recorded.
local node, incarnation, room = ARGV[1], ARGV[2], ARGV[3]
local maxlen, id = tonumber(ARGV[4]), ARGV[5]
local removed, order = {}, {}
for i = 7, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    local owner, owned, client = decode(value)
    if owner == node and owned == incarnation then
      redis.call('HDEL', KEYS[1], ARGV[i])
      if not removed[client] then
        removed[client] = 0
        order[#order + 1] = client
      end
      removed[client] = removed[client] + 1
    end
  end
end
local left = 0
for _, client in ipairs(order) do
  local _, after = count(KEYS[2], client, -removed[client])
  if after <= 0 then
    left = left + 1
    event(KEYS[5], maxlen, id, 'leave', room, client, node, 'left', '')
  end
end
if ARGV[6] == '1' then
  if redis.call('HGET', KEYS[3], node) == incarnation then
    redis.call('HDEL', KEYS[3], node)
  end
  redis.call('HDEL', KEYS[4], room)
end
return left

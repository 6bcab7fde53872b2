-- presence_join.lua adds connections of this node to a room: to the room's
-- node list (for broadcasts) and to its presence, recording a join for
-- each client that had no connection in it.
--
-- KEYS[1]  presence:<room>
-- KEYS[2]  presence-count:<room>
-- KEYS[3]  room:<room>            node -> incarnation, read by route.lua
-- KEYS[4]  rooms-of:<incarnation> the rooms where this node has members, for the sweep
-- KEYS[5]  incarnations           incarnation -> node, for the sweep
-- KEYS[6]  the presence events stream
-- ARGV[1]  node ID
-- ARGV[2]  incarnation
-- ARGV[3]  room
-- ARGV[4]  TTL of the keys in milliseconds (RegistrationTTL)
-- ARGV[5]  the events stream's MAXLEN; 0: no events
-- ARGV[6]  event ID (a UUID the events' IDs start with)
-- ARGV[7…] connection ID, client ID, info; connection ID, client ID, info…
--
-- A connection already present keeps its place and takes the new info.
-- Returns the number of joins recorded.
local node, incarnation, room, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local maxlen, id = tonumber(ARGV[5]), ARGV[6]
for i, value in ipairs({{KEYS[3], node, incarnation}, {KEYS[4], room, ''}, {KEYS[5], incarnation, node}}) do
  redis.call('HSET', value[1], value[2], value[3])
  redis.call('PEXPIRE', value[1], ttl)
end

local added, order, info = {}, {}, {}
for i = 7, #ARGV, 3 do
  local connection, client = ARGV[i], ARGV[i + 1]
  if redis.call('HSET', KEYS[1], connection, encode(node, incarnation, client, ARGV[i + 2])) == 1 then
    if not added[client] then
      added[client] = 0
      order[#order + 1] = client
      info[client] = ARGV[i + 2]
    end
    added[client] = added[client] + 1
  end
end
local joined = 0
for _, client in ipairs(order) do
  if count(KEYS[2], client, added[client]) == 0 then
    joined = joined + 1
    event(KEYS[6], maxlen, id, 'join', room, client, node, nil, info[client])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return joined

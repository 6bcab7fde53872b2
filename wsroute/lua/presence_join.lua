-- presence_join.lua adds connections of this node to a room: to the room's
-- node list (for broadcasts) and to its presence, recording a join for
-- each client that had no connection in it.
--
-- KEYS[1]  presence:<room>                   incarnation -> node
-- KEYS[2]  presence-of:<incarnation>:<room>  this node's entries in the room
-- KEYS[3]  presence-count:<room>
-- KEYS[4]  room:<room>                       node -> incarnation, read by route.lua
-- KEYS[5]  rooms-of:<incarnation>            the rooms where this node has members, for the sweep
-- KEYS[6]  incarnations                      incarnation -> node, for the sweep
-- KEYS[7]  the presence events stream
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
for _, write in ipairs({{KEYS[1], incarnation, node}, {KEYS[4], node, incarnation},
    {KEYS[5], room, ''}, {KEYS[6], incarnation, node}}) do
  redis.call('HSET', write[1], write[2], write[3])
  redis.call('PEXPIRE', write[1], ttl)
end

local added, order, info = {}, {}, {}
for i = 7, #ARGV, 3 do
  local connection, client = ARGV[i], ARGV[i + 1]
  if redis.call('HSET', KEYS[2], connection, encode(client, ARGV[i + 2])) == 1 then
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
  if count(KEYS[3], client, added[client]) == 0 then
    joined = joined + 1
    event(KEYS[7], maxlen, id, 'join', room, client, node, nil, info[client])
  end
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return joined

-- presence_query.lua returns who is in a room: its live entries, after
-- removing those of dead nodes (and recording the leaves that follows).
-- It reads the room's entries and each of their nodes' liveness once:
-- O(connections in the room), never a scan of the registry.
--
-- KEYS[1]  presence:<room>
-- KEYS[2]  presence-count:<room>
-- KEYS[3]  the presence events stream
-- ARGV[1]  key prefix
-- ARGV[2]  room
-- ARGV[3]  the events stream's MAXLEN; 0: no events
-- ARGV[4]  event ID
--
-- Returns {entries removed, connection, node, client, info, connection, …}.
local live = {0}
live[1] = reap(ARGV[1], ARGV[2], KEYS[3], tonumber(ARGV[3]), ARGV[4], live)
return live

-- presence_query.lua is the first step of a Presence query: it returns the
-- node incarnations with members in a room that are alive, for the caller
-- to read their entries, and removes a batch of the entries of those that
-- are not, recording the leaves (the sweep removes the rest). Its cost is
-- in proportion to the room's nodes, and to the batch.
--
-- KEYS[1]  presence:<room>   incarnation -> node
-- KEYS[2]  the presence events stream
-- ARGV[1]  key prefix
-- ARGV[2]  room
-- ARGV[3]  budget: about how many entries of dead nodes to remove
-- ARGV[4]  the events stream's MAXLEN; 0: no events
-- ARGV[5]  event ID
--
-- Returns {entries removed, incarnation, node, incarnation, node, …}.
local prefix, room, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {0}
local instances = redis.call('HGETALL', KEYS[1])
for i = 1, #instances, 2 do
  local incarnation, node = instances[i], instances[i + 1]
  if redis.call('GET', prefix .. 'node:' .. node) == incarnation then
    out[#out + 1] = incarnation
    out[#out + 1] = node
  elseif budget > 0 then
    local removed = reap(prefix, room, incarnation, node, budget, KEYS[2], tonumber(ARGV[4]), ARGV[5])
    out[1] = out[1] + removed
    budget = budget - removed - 1
  end
end
return out

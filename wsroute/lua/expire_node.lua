-- expire_node.lua deletes a node's liveness key, but only if it still holds
-- this process' incarnation: a node closing late never takes down a newer
-- process that took the same node ID.
--
-- KEYS[1]  the node's liveness key
-- ARGV[1]  the incarnation
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

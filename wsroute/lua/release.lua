-- release.lua removes a connection's entry, but only if it is still the one
-- this connection registered (compare-and-delete): a late disconnect on an
-- old node can never remove a newer registration. Redis deletes a hash
-- left empty.
--
-- KEYS[1]  the client's hash
-- ARGV[1]  field (connection ID)
-- ARGV[2]  the value it was registered with
--
-- Returns 1 when removed.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
return redis.call('HDEL', KEYS[1], ARGV[1])

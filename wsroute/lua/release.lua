-- release.lua removes a connection's entry, but only if it is still the one
-- this connection registered (compare-and-delete): a late disconnect on an
-- old node can never remove a newer registration.
--
-- KEYS[1]  the client's hash, or a room's hash
-- ARGV[1]  field (connection ID, or node ID for a room)
-- ARGV[2]  the value it was registered with
--
-- Returns 1 when removed. A hash left with bookkeeping fields only is
-- deleted.
local key = KEYS[1]
if redis.call('HGET', key, ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', key, ARGV[1])
local fields = redis.call('HKEYS', key)
for _, field in ipairs(fields) do
  if string.sub(field, 1, 1) ~= '#' then
    return 1
  end
end
redis.call('DEL', key)
return 1

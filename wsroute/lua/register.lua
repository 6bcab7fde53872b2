-- register.lua records a connection of a client: which node holds it.
--
-- KEYS[1]  the client's hash: field = connection ID, value = "node\nincarnation"
-- ARGV[1]  key prefix
-- ARGV[2]  connection ID
-- ARGV[3]  the entry: "node\nincarnation"
-- ARGV[4]  TTL of the hash in milliseconds
--
-- Registering is a plain claim: it never removes another connection, so a
-- client may be connected several times (two tabs, phone and laptop). It
-- does reap the client's entries whose node is no longer alive.
local key, prefix = KEYS[1], ARGV[1]
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  if field ~= ARGV[2] then
    local node, incarnation = string.match(value, '^(.-)\n(.*)$')
    if not node or redis.call('GET', prefix .. 'node:' .. node) ~= incarnation then
      redis.call('HDEL', key, field)
    end
  end
end
redis.call('HSET', key, ARGV[2], ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1

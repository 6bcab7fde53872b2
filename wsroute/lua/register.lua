-- register.lua records a connection of a client: which node holds it.
--
-- KEYS[1]  the client's hash: field = connection ID, value = "node\nincarnation"
-- ARGV[1]  key prefix
-- ARGV[2]  connection ID
-- ARGV[3]  the entry: "node\nincarnation"
-- ARGV[4]  TTL of the hash in milliseconds
-- ARGV[5]  the most live connections the client may have, this one
--          included (Config.MaxConnectionsPerClient); 0: no bound
--
-- Registering is a plain claim: it never removes another connection, so a
-- client may be connected several times (two tabs, phone and laptop). It
-- does reap the client's entries whose node is no longer alive, and then
-- counts the others: over the bound, it writes nothing. Counting here, in
-- the one script that adds entries, is what makes the bound hold for nodes
-- registering the same client at once.
-- Returns 1 when registered, 0 when refused.
local key, prefix, limit = KEYS[1], ARGV[1], tonumber(ARGV[5])
local fields = redis.call('HGETALL', key)
local others = 0
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  if field ~= ARGV[2] then
    local node, incarnation = string.match(value, '^(.-)\n(.*)$')
    if not node or redis.call('GET', prefix .. 'node:' .. node) ~= incarnation then
      redis.call('HDEL', key, field)
    else
      others = others + 1
    end
  end
end
if limit > 0 and others >= limit then
  return 0
end
redis.call('HSET', key, ARGV[2], ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1

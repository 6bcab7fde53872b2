-- register.lua records a connection of a client: which node holds it.
--
-- KEYS[1]  the client's hash: field = connection ID, value = "node\nincarnation\ngeneration"
-- ARGV[1]  key prefix
-- ARGV[2]  connection ID
-- ARGV[3]  node ID
-- ARGV[4]  node incarnation
-- ARGV[5]  TTL of the hash in milliseconds
-- ARGV[6]  the generation (see Node.nextGeneration)
--
-- Registering is a plain claim: it never removes another connection, so a
-- client may be connected several times (two tabs, phone and laptop). It
-- does reap the client's entries whose node is no longer alive.
-- Returns the generation.
local key, prefix, gen = KEYS[1], ARGV[1], ARGV[6]
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  if string.sub(field, 1, 1) ~= '#' and field ~= ARGV[2] then
    local node, incarnation = string.match(value, '^(.-)\n(.-)\n')
    if redis.call('GET', prefix .. 'node:' .. node) ~= incarnation then
      redis.call('HDEL', key, field)
    end
  end
end
redis.call('HSET', key, ARGV[2], ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. gen)
redis.call('PEXPIRE', key, ARGV[5])
return gen

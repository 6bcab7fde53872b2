-- route.lua delivers a message to the nodes that hold its recipients, in
-- one round trip: it looks the recipients up, drops entries whose node is
-- dead, and PUBLISHes one envelope per live node on that node's channel.
--
-- KEYS[1]  a client's hash (connection -> "node\nincarnation")
--          or a room's hash (node -> incarnation)
-- ARGV[1]  key prefix
-- ARGV[2]  "client" or "room"
-- ARGV[3]  "PUBLISH", or "SPUBLISH" on Redis Cluster (see Node.publish)
-- ARGV[4]  message UUID
-- ARGV[5]  payload
-- ARGV[6…] metadata: key, value, key, value…
--
-- The envelope is redisbus' wire format (see marshaler.go); for a client,
-- each node's copy carries "wsroute_targets": the connections it should
-- write to, separated by commas.
--
-- An entry whose node's liveness key is gone or holds another incarnation
-- is stale and is removed (so is one this script cannot read, such as an
-- earlier version's); so is one whose node's channel reached nobody
-- (the node is alive but not listening). On a cluster only SPUBLISH, to a
-- shard channel in the registry's slot, counts every subscriber: PUBLISH
-- counts those of the node running the script. Returns {nodes reached, stale
-- entries removed, live entries found}.
local key, prefix, kind, publish = KEYS[1], ARGV[1], ARGV[2], ARGV[3]

local function u32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local function envelope(extra)
  local parts = {}
  for i = 6, #ARGV, 2 do
    parts[#parts + 1] = u32(#ARGV[i]) .. ARGV[i] .. u32(#ARGV[i + 1]) .. ARGV[i + 1]
  end
  for k, v in next, extra do
    parts[#parts + 1] = u32(#k) .. k .. u32(#v) .. v
  end
  return '\193RB\1' .. u32(#ARGV[4]) .. ARGV[4] .. u32(#parts) .. table.concat(parts) .. ARGV[5]
end

-- Group the live entries by node.
local targets, order = {}, {}
local stale, live = 0, 0
local entries = redis.call('HGETALL', key)
for i = 1, #entries, 2 do
  local field, value = entries[i], entries[i + 1]
  local node, incarnation = field, value
  if kind == 'client' then
    node, incarnation = string.match(value, '^(.-)\n(.*)$')
  end
  if node and redis.call('GET', prefix .. 'node:' .. node) == incarnation then
    live = live + 1
    if not targets[node] then
      targets[node] = {}
      order[#order + 1] = node
    end
    targets[node][#targets[node] + 1] = field
  else
    redis.call('HDEL', key, field)
    stale = stale + 1
  end
end

local reached = 0
for _, node in ipairs(order) do
  local extra = {}
  if kind == 'client' then
    extra['wsroute_targets'] = table.concat(targets[node], ',')
  end
  if redis.call(publish, prefix .. 'to:' .. node, envelope(extra)) > 0 then
    reached = reached + 1
  else
    for _, field in ipairs(targets[node]) do
      redis.call('HDEL', key, field)
      stale = stale + 1
    end
  end
end
return {reached, stale, live}

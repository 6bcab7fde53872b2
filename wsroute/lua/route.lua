-- route.lua delivers a message to the nodes that hold its recipients, in
-- one round trip: it looks the recipients up, drops entries whose node is
-- dead, and PUBLISHes one envelope per live node on that node's channel.
--
-- KEYS[1]  a client's hash (connection -> "node\nincarnation")
--          or a room's hash (node -> incarnation)
-- KEYS[2]  with history: the stream's meta hash (epoch, offset)
-- KEYS[3]  with history: the history stream (see history_read.lua)
-- ARGV[1]  key prefix
-- ARGV[2]  "client" or "room"
-- ARGV[3]  "PUBLISH", or "SPUBLISH" on Redis Cluster (see Node.publish)
-- ARGV[4]  message UUID
-- ARGV[5]  payload
-- ARGV[6]  "1": keep the message in the history; "0": do not; "drop":
--          Redis refused to keep it (full): delete the history, so that
--          its clients are told they missed messages (a new epoch), and
--          route the message unkept
-- ARGV[7]  history: the most messages kept (XADD MAXLEN)
-- ARGV[8]  history: its TTL in milliseconds
-- ARGV[9]  history: the meta hash's TTL in milliseconds
-- ARGV[10] history: a new epoch, used if the stream has none
-- ARGV[11…] metadata: key, value, key, value…
--
-- The envelope is redisbus' wire format (see marshaler.go); for a client,
-- each node's copy carries "wsroute_targets": the connections it should
-- write to, separated by commas. A message kept in the history carries
-- "wsroute_epoch", "wsroute_offset" and "wsroute_sent_at" (ms): it is kept
-- whether or not anyone receives it now, in the same atomic step as its
-- routing, so that its offset orders it with every other message of the
-- stream on every node.
--
-- An entry whose node's liveness key is gone or holds another incarnation
-- is stale and is removed (so is one this script cannot read, such as an
-- earlier version's); so is one whose node's channel reached nobody
-- (the node is alive but not listening). On a cluster only SPUBLISH, to a
-- shard channel in the registry's slot, counts every subscriber: PUBLISH
-- counts those of the node running the script. Returns {nodes reached, stale
-- entries removed, live entries found, offset (0: not kept), epoch}.
local key, prefix, kind, publish = KEYS[1], ARGV[1], ARGV[2], ARGV[3]

local function u32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local function envelope(extra)
  local parts = {}
  for i = 11, #ARGV, 2 do
    parts[#parts + 1] = u32(#ARGV[i]) .. ARGV[i] .. u32(#ARGV[i + 1]) .. ARGV[i + 1]
  end
  for k, v in next, extra do
    parts[#parts + 1] = u32(#k) .. k .. u32(#v) .. v
  end
  return '\193RB\1' .. u32(#ARGV[4]) .. ARGV[4] .. u32(#parts) .. table.concat(parts) .. ARGV[5]
end

-- Keep the message first: an offline recipient recovers it later.
local common, offset, epoch = {}, 0, ''
if ARGV[6] == '1' then
  local meta, history = KEYS[2], KEYS[3]
  -- Its first write takes memory (see history_lib.lua): refused whole
  -- when Redis is full.
  epoch = history_epoch(meta, history, ARGV[10])
  offset = redis.call('HINCRBY', meta, 'offset', 1)
  local t = redis.call('TIME')
  local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  redis.call('XADD', history, 'MAXLEN', ARGV[7], string.format('%d-0', offset), 'd', ARGV[5], 't', now)
  redis.call('PEXPIRE', history, ARGV[8])
  redis.call('PEXPIRE', meta, ARGV[9])
  common['wsroute_epoch'] = epoch
  common['wsroute_offset'] = string.format('%d', offset)
  common['wsroute_sent_at'] = now
end

if ARGV[6] == 'drop' then
  -- DEL takes no memory: Redis runs it full, and the rest after it.
  redis.call('DEL', KEYS[2], KEYS[3])
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
  for k, v in next, common do
    extra[k] = v
  end
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
return {reached, stale, live, offset, epoch}

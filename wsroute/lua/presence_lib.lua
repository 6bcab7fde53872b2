-- presence_lib.lua is put in front of every presence script: how a
-- connection's entry is written, and the bookkeeping that decides joins
-- and leaves.
--
-- A room's presence is two hashes in the registry's slot:
--   presence:<room>        connection ID -> node \n incarnation \n #client \n client info
--   presence-count:<room>  client ID -> how many of its connections presence:<room> holds
-- The count makes a join or a leave cost O(1) and be recorded once,
-- cluster-wide: the script that takes a client's count from 0, or to 0,
-- records the event, and scripts run one at a time.

local function encode(node, incarnation, client, info)
  return node .. '\n' .. incarnation .. '\n' .. #client .. '\n' .. client .. info
end

-- decode returns an entry's node, incarnation, client and info, or nil for
-- a value it cannot read.
local function decode(value)
  local node, incarnation, length, rest = string.match(value, '^([^\n]*)\n([^\n]*)\n(%d+)\n(.*)$')
  if not node then
    return nil
  end
  length = tonumber(length)
  if #rest < length then
    return nil
  end
  return node, incarnation, string.sub(rest, 1, length), string.sub(rest, length + 1)
end

-- count adds delta to a client's count and returns the count before and
-- after; a count that reaches 0 is removed.
local function count(key, client, delta)
  local before = tonumber(redis.call('HGET', key, client)) or 0
  local after = before + delta
  if after > 0 then
    redis.call('HSET', key, client, after)
  else
    redis.call('HDEL', key, client)
  end
  return before, after
end

-- event appends a presence event to the events stream, unless events are
-- off (maxlen 0). The entry's fields are what redisbus' and
-- watermill-redisstream's default Streams marshalers read: a message UUID
-- (the script's, numbered), the payload (a join's info), and the rest as
-- metadata.
local events = 0
local function event(stream, maxlen, id, kind, room, client, node, reason, info)
  if maxlen <= 0 then
    return
  end
  events = events + 1
  local command = {'XADD', stream, 'MAXLEN', '~', maxlen, '*',
    '_watermill_message_uuid', id .. '-' .. events, 'payload', info,
    'wsroute_presence', kind, 'wsroute_room', room, 'wsroute_client', client, 'wsroute_node', node}
  if reason then
    command[#command + 1] = 'wsroute_reason'
    command[#command + 1] = reason
  end
  redis.call(unpack(command))
end

-- reap removes from a room's presence the entries whose node is no longer
-- alive (its liveness key gone, or holding another incarnation), records a
-- leave for each client left with no connection, and returns how many
-- entries it removed and how many it read. When live is a table, the live
-- entries are appended to it: connection, node, client, info.
local function reap(prefix, room, stream, maxlen, id, live)
  local key, counts = prefix .. 'presence:' .. room, prefix .. 'presence-count:' .. room
  local entries = redis.call('HGETALL', key)
  local alive, gone, order, reaped = {}, {}, {}, 0
  for i = 1, #entries, 2 do
    local connection = entries[i]
    local node, incarnation, client, info = decode(entries[i + 1])
    local ok = false
    if node then
      local instance = node .. '\n' .. incarnation
      if alive[instance] == nil then
        alive[instance] = redis.call('GET', prefix .. 'node:' .. node) == incarnation
      end
      ok = alive[instance]
    end
    if ok then
      if live then
        live[#live + 1] = connection
        live[#live + 1] = node
        live[#live + 1] = client
        live[#live + 1] = info
      end
    else
      redis.call('HDEL', key, connection)
      reaped = reaped + 1
      if client then
        if not gone[client] then
          gone[client] = {0, node}
          order[#order + 1] = client
        end
        gone[client][1] = gone[client][1] + 1
      end
    end
  end
  for _, client in ipairs(order) do
    local _, after = count(counts, client, -gone[client][1])
    if after <= 0 then
      event(stream, maxlen, id, 'leave', room, client, gone[client][2], 'node_gone', '')
    end
  end
  return reaped, #entries / 2
end

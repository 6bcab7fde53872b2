-- presence_lib.lua is put in front of every presence script: how a
-- connection's entry is written, and the bookkeeping that decides joins
-- and leaves.
--
-- A room's presence lives in the registry's slot:
--   presence:<room>                     incarnation -> node, for node incarnations with members
--   presence-of:<incarnation>:<room>    connection ID -> #client \n client info
--   presence-count:<room>               client ID -> its connections in the room, all nodes
-- A node incarnation's entries are a hash of their own, so that a query
-- reads only those of live nodes and a dead node's are removed in batches
-- without reading anyone else's. The count makes a join or a leave cost
-- O(1) and be recorded once, cluster-wide: the script that takes a
-- client's count from 0, or to 0, records the event, and scripts run one
-- at a time.

local function encode(client, info)
  return #client .. '\n' .. client .. info
end

-- decode returns an entry's client and info, or nil for a value it cannot
-- read.
local function decode(value)
  local length, rest = string.match(value, '^(%d+)\n(.*)$')
  if not length then
    return nil
  end
  length = tonumber(length)
  if #rest < length then
    return nil
  end
  return string.sub(rest, 1, length), string.sub(rest, length + 1)
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

-- leaveAll takes a count of connections per client (tally: client ->
-- number, order: the clients) out of a room's counts and records a leave
-- for each client left with none. Returns the leaves.
local function leaveAll(prefix, room, tally, order, node, reason, stream, maxlen, id)
  local left = 0
  for _, client in ipairs(order) do
    local _, after = count(prefix .. 'presence-count:' .. room, client, -tally[client])
    if after <= 0 then
      left = left + 1
      event(stream, maxlen, id, 'leave', room, client, node, reason, '')
    end
  end
  return left
end

-- forget takes a node incarnation with no entry left in a room out of the
-- room: out of its presence index, its node list for broadcasts, and the
-- incarnation's list of rooms.
local function forget(prefix, room, incarnation, node)
  redis.call('HDEL', prefix .. 'presence:' .. room, incarnation)
  if redis.call('HGET', prefix .. 'room:' .. room, node) == incarnation then
    redis.call('HDEL', prefix .. 'room:' .. room, node)
  end
  redis.call('HDEL', prefix .. 'rooms-of:' .. incarnation, room)
end

-- scanBatch returns at most budget fields of a hash, with their values, and
-- whether they are all it has. It follows the HSCAN cursor from the start
-- rather than taking one step: the caller deletes what it is given, so
-- the buckets a scan visits first are the ones it emptied before.
local function scanBatch(key, budget)
  local cursor, fields = '0', {}
  repeat
    local scan = redis.call('HSCAN', key, cursor, 'COUNT', math.max(budget, 1))
    cursor = scan[1]
    for _, v in ipairs(scan[2]) do
      fields[#fields + 1] = v
    end
  until cursor == '0' or #fields >= 2 * budget
  -- A step may return more than COUNT: keep the batch to the budget. What
  -- is left out goes in a later batch.
  local all = cursor == '0'
  for i = #fields, 2 * math.max(budget, 1) + 1, -1 do
    fields[i] = nil
    all = false
  end
  return fields, all
end

-- tallyEntry adds the client of a presence entry's value to tally (connections
-- per client), keeping the clients in order of first sight.
local function tallyEntry(tally, order, value)
  local client = decode(value)
  if client then
    if not tally[client] then
      tally[client] = 0
      order[#order + 1] = client
    end
    tally[client] = tally[client] + 1
  end
end

-- reap removes about budget entries of a dead node incarnation from a room
-- (a batch, not the whole hash), recording the leaves, and forgets the
-- incarnation there once none is left. Returns how many it removed and
-- whether none is left.
local function reap(prefix, room, incarnation, node, budget, stream, maxlen, id)
  local key = prefix .. 'presence-of:' .. incarnation .. ':' .. room
  local fields, all = scanBatch(key, budget)
  local tally, order, removed = {}, {}, 0
  for i = 1, #fields, 2 do
    -- A scan may return a field twice.
    if redis.call('HDEL', key, fields[i]) == 1 then
      removed = removed + 1
      tallyEntry(tally, order, fields[i + 1])
    end
  end
  leaveAll(prefix, room, tally, order, node, 'node_gone', stream, maxlen, id)
  -- A scan can stop with a full batch that holds the last entries, its
  -- cursor not yet back at 0: the hash is gone with them all the same.
  if not all and redis.call('EXISTS', key) == 0 then
    all = true
  end
  if all then
    forget(prefix, room, incarnation, node)
  end
  return removed, all
end

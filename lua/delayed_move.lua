-- delayed_move.lua moves the messages that are due from a topic's delayed
-- set into its stream, oldest due first, each exactly once: adding an
-- entry and removing its member happen in one atomic step, so that movers
-- in any number of processes, one of them killed at any point, never move
-- a message twice or lose one.
--
-- KEYS[1]  the topic's delayed set (see delayed_schedule.lua)
-- KEYS[2]  the topic's stream
-- ARGV[1]  the most messages to move
--
-- "Due" is by Redis' clock, the one clock every process shares.
-- Returns {moved, the next due time ("" if none), Redis' time (ms), the
-- lateness of each moved message (ms)…}.
local key, stream = KEYS[1], KEYS[2]

-- fields splits a member after its 32-character prefix: "<length>:<bytes>"…
local function fields(member)
  local out, pos = {}, 33
  while pos <= #member do
    local colon = string.find(member, ':', pos, true)
    local length = tonumber(string.sub(member, pos, colon - 1))
    out[#out + 1] = string.sub(member, colon + 1, colon + length)
    pos = colon + length + 1
  end
  return out
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local reply = {0, '', now}
for i = 1, #due, 2 do
  local member = due[i]
  redis.call('XADD', stream, '*', unpack(fields(member)))
  redis.call('ZREM', key, member)
  reply[#reply + 1] = now - tonumber(due[i + 1])
end
reply[1] = #due / 2
local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if head[2] then
  reply[2] = head[2]
end
return reply

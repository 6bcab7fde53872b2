-- delete_idle_consumers.lua removes consumers that hold nothing and have
-- been idle for long, so a group does not collect the names of every
-- process that ever ran.
--
-- KEYS[1]  the stream
-- ARGV[1]  the consumer group
-- ARGV[2]  idle time in milliseconds after which an empty consumer goes
-- ARGV[3]  the calling consumer, never removed
--
-- Checking "nothing pending" and deleting happen in one step: a consumer
-- that reads an entry in between cannot exist, so no pending entry is ever
-- dropped with its consumer. Returns the names removed.
local stream, group, min_idle, caller = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local removed = {}
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local info = {}
  for i = 1, #fields, 2 do
    info[fields[i]] = fields[i + 1]
  end
  if info['name'] ~= caller and info['pending'] == 0 and info['idle'] >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed

-- replay.lua moves one dead letter back to a stream: it re-adds the
-- entry's own fields, without the dead-letter fields the subscriber
-- appended to them, to KEYS[2] and deletes the dead letter from KEYS[1].
-- A script runs whole or not at all, so the entry is in exactly one of the
-- two streams whenever the console is killed.
--
-- ARGV[1] is the dead letter's ID, ARGV[2..] the dead-letter field names.
-- Returns the ID of the re-added entry, or false when the dead letter is
-- gone (replayed or purged meanwhile).
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields = found[1][2]
-- The dead-letter fields are the last ones, each once: an entry of the
-- origin stream may have a field of the same name, which stays.
local appended = {}
for i = 2, #ARGV do
  appended[ARGV[i]] = true
end
local n = #fields
while n >= 2 and appended[fields[n - 1]] do
  appended[fields[n - 1]] = nil
  n = n - 2
end
if n == 0 then
  return redis.error_reply('ERR dead letter ' .. ARGV[1] .. ' has no fields besides the dead-letter ones')
end
local args = {'XADD', KEYS[2], '*'}
for i = 1, n do
  args[#args + 1] = fields[i]
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id

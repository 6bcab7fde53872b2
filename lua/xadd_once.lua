-- xadd_once.lua appends an entry to a stream unless the stream stored the
-- same message within the window: the check and the XADD in one step, so
-- that a publish sent again after a lost reply, or by another process,
-- finds the first one's mark and stores nothing.
--
-- KEYS[1]  the stream
-- KEYS[2]  the message's mark, in the stream's hash slot
-- ARGV[1]  the window in milliseconds: how long the mark is kept
-- ARGV[2…] the entry's fields and values
--
-- Returns {entry ID, 0} for an entry it stored, and {the earlier entry's
-- ID, 1} for a message it found marked. The mark holds the entry's ID, so
-- that a retry learns where its message went.
local earlier = redis.call('GET', KEYS[2])
if earlier then
  return {earlier, 1}
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}

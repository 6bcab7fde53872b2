-- release.lua deletes a claim or a mark, but only the caller's own: a
-- claim that lapsed may belong to another process by now.
--
-- KEYS[1]  the key
-- ARGV[1]  the value the caller wrote
--
-- Returns 1 when it deleted the key, 0 when the key held something else.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

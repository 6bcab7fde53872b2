-- renew.lua extends the caller's own claim on a message.
--
-- KEYS[1]  the claim's key
-- ARGV[1]  the claim the caller wrote
-- ARGV[2]  the new time to live, in milliseconds
--
-- Returns 1 when the claim is still the caller's, 0 when it lapsed (and
-- maybe another process claimed the message, or marked it handled).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

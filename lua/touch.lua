-- touch.lua keeps stream entries with the consumer that holds them, and the
-- consumer's name with its subscriber.
--
-- KEYS[1]  the stream
-- KEYS[2]  the consumer name's lease (see lease.lua)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer
-- ARGV[3]  the lease token
-- ARGV[4]  the lease time to live, in milliseconds
-- ARGV[5…] pairs: entry ID, delivery count to record ("-" keeps the count)
--
-- An entry still pending with this consumer gets its idle time reset
-- (XCLAIM ... JUSTID, which does not count a delivery) and, when given, its
-- delivery count set. The check and the claim are one step, so an entry
-- that another consumer has claimed meanwhile is never taken back.
-- Returns the IDs that are no longer this consumer's: acked, claimed by
-- another consumer, or trimmed away. Fails with "LEASELOST <holder>" when
-- another subscriber holds the consumer name now.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local holder = keep_lease(KEYS[2], ARGV[3], ARGV[4])
if holder then
  return redis.error_reply('LEASELOST ' .. holder)
end
local lost = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    if ARGV[i + 1] == '-' then
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    end
  else
    lost[#lost + 1] = id
  end
end
return lost

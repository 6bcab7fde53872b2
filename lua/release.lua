-- release.lua hands entries a consumer holds back to its group, so that
-- the other consumers take them at once instead of after ClaimMinIdle: the
-- subscriber's last Subscribe on the stream ended, or it is closing.
--
-- KEYS[1]  the stream
-- KEYS[2]  the consumer name's lease (see lease.lua)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer
-- ARGV[3]  the lease token
-- ARGV[4]  the lease time to live, in milliseconds
-- ARGV[5]  "1" to give up the consumer name too (Close), else "0"
-- ARGV[6…] pairs: entry ID, delivery count to record ("-" keeps the count)
--
-- Each entry still pending with the consumer stays in its pending list but
-- looks idle since 1970 (XCLAIM ... TIME 0 JUSTID), so any consumer's next
-- claim takes it, and the consumer's own next run resumes it. A count is
-- given for entries read but never handed to a handler, to take back the
-- delivery that reading counted. Returns how many entries were released.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local holder = keep_lease(KEYS[2], ARGV[3], ARGV[4])
if holder then
  return redis.error_reply('LEASELOST ' .. holder)
end
local released = 0
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    if ARGV[i + 1] == '-' then
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'TIME', 0, 'JUSTID')
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'TIME', 0, 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    end
    released = released + 1
  end
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[2])
end
return released

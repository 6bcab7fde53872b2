-- take.lua readies entries pending with a consumer for delivery to its
-- handlers: its own pending entries after a restart, or entries it has just
-- claimed from another consumer (XAUTOCLAIM ... JUSTID).
--
-- KEYS[1]  the stream
-- KEYS[2]  the consumer name's lease (see lease.lua)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer
-- ARGV[3]  the lease token
-- ARGV[4]  the lease time to live, in milliseconds
-- ARGV[5]  MaxDeliveries; 0 for no limit
-- ARGV[6…] entry IDs
--
-- Delivery counts: the group's count of an entry is how many times it may
-- have reached a handler. Reading a new entry (XREADGROUP >) sets it to 1
-- before any handler has it, so after a crash the true number is the count
-- or one less. Only deliveries the caller is about to make are counted:
-- the caller takes no more entries than its handlers start at once, and
-- this script records each one (RETRYCOUNT count+1) before it is handed
-- out. An entry is exhausted when even the lower bound, count-1, reached
-- MaxDeliveries: then it is not counted again but renewed, for the caller
-- to dead-letter.
--
-- An entry whose count is 1 or more may have reached a handler before and
-- not been acked (a graceful hand-back takes back the count of an entry
-- never handed out, so only a crash, or a handler that had it when its
-- subscriber closed, leaves one): it may crash its process again, and must
-- not count that crash against other messages, so it runs alone. Such an
-- entry is taken in a call of its own: the script stops before one that is
-- not first, and right after one that is; the caller takes the rest later.
--
-- Returns one array per ID it got to:
--   {id, "take", count, fields}       deliver it; count includes this delivery
--   {id, "exhausted", count, fields}  dead-letter it
--   {id, "gone"}                      trimmed or deleted: acked, nothing left
--   {id, "other"}                     not pending with this consumer any more
-- Fails with "LEASELOST <holder>" when another subscriber holds the name.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local holder = keep_lease(KEYS[2], ARGV[3], ARGV[4])
if holder then
  return redis.error_reply('LEASELOST ' .. holder)
end
local max_deliveries = tonumber(ARGV[5])
local out, taken = {}, 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if not pending[1] or pending[1][2] ~= consumer then
    out[#out + 1] = {id, 'other'}
  else
    local entry = redis.call('XRANGE', stream, id, id)
    local count = pending[1][4]
    if not entry[1] then
      redis.call('XACK', stream, group, id)
      out[#out + 1] = {id, 'gone'}
    elseif max_deliveries > 0 and count - 1 >= max_deliveries then
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
      out[#out + 1] = {id, 'exhausted', count, entry[1][2]}
    else
      local alone = count >= 1
      if alone and taken > 0 then
        break
      end
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', count + 1, 'JUSTID')
      out[#out + 1] = {id, 'take', count + 1, entry[1][2]}
      taken = taken + 1
      if alone then
        break
      end
    end
  end
end
return out

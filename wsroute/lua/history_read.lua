-- history_read.lua reads a client's or room's history: its epoch, its last
-- offset, and the messages after an offset (see history.go).
--
-- KEYS[1]  the stream's meta hash: epoch, offset (the last given)
-- KEYS[2]  the history stream: IDs "<offset>-0", fields d (payload), t (ms)
-- ARGV[1]  the offset to read after; negative: read no messages
-- ARGV[2]  the most messages to return
-- ARGV[3]  a new epoch, used if the stream has none of this Redis
--          process (see history_lib.lua)
-- ARGV[4]  the meta hash's TTL in milliseconds
--
-- A stream without an epoch of this Redis process starts one here, with
-- offset 0, and its old messages are deleted: their offsets belong to an
-- epoch no client can present any more, and XADD must be free to number
-- from 1 again. Reading extends the meta hash's life, so that a client's
-- position outlives a quiet period.
-- Returns {epoch, last offset, Redis' time in ms, entries}.
local meta, history = KEYS[1], KEYS[2]
local after, count = tonumber(ARGV[1]), tonumber(ARGV[2])

local epoch = history_epoch(meta, history, ARGV[3])
redis.call('PEXPIRE', meta, ARGV[4])
local top = tonumber(redis.call('HGET', meta, 'offset'))

local entries = {}
if after >= 0 and after < top then
  entries = redis.call('XRANGE', history, string.format('%d-0', after + 1), '+', 'COUNT', count)
end
local t = redis.call('TIME')
return {epoch, top, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), entries}

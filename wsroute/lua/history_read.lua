-- history_read.lua reads a client's or room's history: its epoch, its last
-- offset, and the messages after an offset (see history.go).
--
-- KEYS[1]  the stream's meta hash: epoch, offset (the last given)
-- KEYS[2]  the history stream: IDs "<offset>-0", fields d (payload), t (ms)
-- ARGV[1]  the offset to read after; negative: read no messages
-- ARGV[2]  the most messages to return
-- ARGV[3]  a new epoch, used if the stream has none (never had one, or
--          lost it: Redis restarted empty, or the meta hash expired)
-- ARGV[4]  the meta hash's TTL in milliseconds
--
-- A stream without an epoch starts one here, with offset 0, and its old
-- messages, if any survived the meta hash, are deleted: their offsets
-- belong to an epoch no client can present any more, and XADD must be
-- free to number from 1 again. Reading extends the meta hash's life, so
-- that a client's position outlives a quiet period.
-- Returns {epoch, last offset, Redis' time in ms, entries}.
local meta, history = KEYS[1], KEYS[2]
local after, count = tonumber(ARGV[1]), tonumber(ARGV[2])

local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- HSET first: over maxmemory Redis refuses it, as the script's first
  -- write, and nothing is written (after a DEL it would let it through).
  epoch = ARGV[3]
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  redis.call('DEL', history)
end
redis.call('PEXPIRE', meta, ARGV[4])
local top = tonumber(redis.call('HGET', meta, 'offset'))

local entries = {}
if after >= 0 and after < top then
  entries = redis.call('XRANGE', history, string.format('%d-0', after + 1), '+', 'COUNT', count)
end
local t = redis.call('TIME')
return {epoch, top, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), entries}

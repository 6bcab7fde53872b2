-- trim.lua bounds a stream without losing, unless a cap says so, what a
-- consumer group still needs.
--
-- KEYS[1]  the stream
-- ARGV[1]  the most entries to keep; 0 for no cap
-- ARGV[2]  the oldest entry ID to keep, from a maximum age; "" for no cap
--
-- Without caps it removes what every consumer group has read and acked:
-- the entries below each group's oldest pending entry and below its
-- last-delivered ID (XTRIM MINID ~, which drops whole nodes only, so it is
-- cheap and keeps a little more). A stream without groups is left alone:
-- its entries wait for the group that will be created.
--
-- With caps it keeps the stream within them exactly (XTRIM MAXLEN = and
-- MINID =), consumed or not, and counts what it removed that some group
-- had not yet read or acked: the entries at or above that group's safe
-- point, counted in chunks before they go.
--
-- Returns {removed, removed before some group consumed them}.
local stream = KEYS[1]
local max_len, min_id = tonumber(ARGV[1]), ARGV[2]

-- Stream IDs are "<ms>-<seq>" of up to 20 digits each: compare them as
-- numbers written in decimal, which Lua's doubles cannot hold exactly.
local function compare_numbers(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end
local function compare_ids(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  local c = compare_numbers(a_ms, b_ms)
  if c ~= 0 then
    return c
  end
  return compare_numbers(a_seq, b_seq)
end

-- next_id is the lowest ID above id.
local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  local digits, i = {}, #seq
  for c in string.gmatch(seq, '%d') do
    digits[#digits + 1] = tonumber(c)
  end
  while i > 0 and digits[i] == 9 do
    digits[i] = 0
    i = i - 1
  end
  if i == 0 then
    table.insert(digits, 1, 1)
  else
    digits[i] = digits[i] + 1
  end
  return ms .. '-' .. table.concat(digits)
end

-- safe is the lowest ID some group still needs: below it, every group has
-- read and acked every entry. nil when there is no group.
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if groups['err'] then
  return {0, 0} -- no such stream
end
local safe = nil
for _, fields in ipairs(groups) do
  local info = {}
  for i = 1, #fields, 2 do
    info[fields[i]] = fields[i + 1]
  end
  local needed = next_id(info['last-delivered-id'])
  if info['pending'] > 0 then
    -- the oldest pending entry was delivered, so it is not above the
    -- last-delivered ID
    needed = redis.call('XPENDING', stream, info['name'])[2]
  end
  if safe == nil or compare_ids(needed, safe) < 0 then
    safe = needed
  end
end

-- count counts the entries between start and finish (XRANGE bounds), up
-- to limit, in chunks, so that memory stays small whatever the count.
local function count(start, finish, limit)
  local n = 0
  while n < limit do
    local chunk = redis.call('XRANGE', stream, start, finish, 'COUNT', math.min(1000, limit - n))
    n = n + #chunk
    if #chunk == 0 then
      return n
    end
    start = '(' .. chunk[#chunk][1]
  end
  return n
end

if max_len == 0 and min_id == '' then
  if safe == nil then
    return {0, 0}
  end
  return {redis.call('XTRIM', stream, 'MINID', '~', safe), 0}
end

local removed, unconsumed = 0, 0
if min_id ~= '' then
  if safe ~= nil and compare_ids(min_id, safe) > 0 then
    unconsumed = unconsumed + count(safe, '(' .. min_id, math.huge)
  end
  removed = removed + redis.call('XTRIM', stream, 'MINID', '=', min_id)
end
if max_len > 0 then
  local excess = redis.call('XLEN', stream) - max_len
  if excess > 0 then
    if safe ~= nil then
      unconsumed = unconsumed + excess - count('-', '(' .. safe, excess)
    end
    removed = removed + redis.call('XTRIM', stream, 'MAXLEN', '=', max_len)
  end
end
return {removed, unconsumed}

-- lease.lua is put in front of the scripts that act for a consumer of a
-- group (touch, take, release): it defines keep_lease, which they call
-- before anything else.
--
-- A consumer name is leased to one live subscriber at a time: KEYS[2] of
-- those scripts holds the subscriber's random token and expires unless
-- renewed. keep_lease(key, token, ttl_ms) renews it, or takes it again when
-- it lapsed and nobody took it meanwhile (Redis restarted empty, or the
-- subscriber was paused for longer than the lease). It returns nil, or the
-- token of the subscriber that holds the name now: then the name, and every
-- entry pending under it, is no longer the caller's.
local function keep_lease(key, token, ttl)
  local holder = redis.call('GET', key)
  if holder == token then
    redis.call('PEXPIRE', key, ttl)
    return nil
  end
  if not holder then
    redis.call('SET', key, token, 'PX', ttl)
    return nil
  end
  return holder
end

-- expire.lua: releases holds that are past their deadline; safe to run any number of
-- times, from any number of instances, for holds in any state.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- KEYS[S+1..]  hold:<order> for each candidate order      (S = STORE_KEYS)
-- ARGV[1]      retention of a finished hold (ms)
-- ARGV[2..5]   the waitlist hand-over's settings and a fresh order id (see read_waitlist)
-- ARGV[6..]    the candidates' order ids, in the same order as their KEYS
--
-- A candidate that is HELD and due (Redis TIME >= held_until) becomes EXPIRED with its
-- units back; one that is HELD but not yet due is left alone; one that is gone or no
-- longer HELD only leaves the deadline index.
-- Reply: the number of holds released by this call.

local retention_ms = tonumber(ARGV[1])
read_waitlist(2)
local now = now_ms()
local released = 0
for i = STORE_KEYS + 1, #KEYS do
  local hold_key, order_id = KEYS[i], ARGV[i - STORE_KEYS + 5]
  local status, held_until = unpack(redis.call('HMGET', hold_key, 'status', 'held_until'))
  if status == 'HELD' then
    if now >= tonumber(held_until) then
      release(order_id, hold_key, 'EXPIRED', now, retention_ms)
      released = released + 1
    end
  else
    redis.call('ZREM', store.deadlines, order_id)
  end
end
return released
